"""Writing a corpus row as a ReDial record (one JSONL line), as ReDial's release has them.

Each turn is one message of the seeker (initiatorWorkerId 0) or the recommender (respondentWorkerId 1). A title
the grounding matched (the recommender's turns) or the catalog finds (the user's) becomes `@<item_id>` in the text,
and `movieMentions` maps the id to "Title (Year)". The questionnaires say what the outcome says: every movie the
recommender named is `suggested`, the accepted one is `liked` (1), the others "did not say" (2); `seen` is not
known (2).
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any

from interplay.common.titles import TOKEN_RE
from interplay.generator.inputs.catalog import Catalog, Item

SEEKER, RECOMMENDER = 0, 1
NOT_KEPT = ("ReDial has no place for the preference summary, the target attributes, the held-out target or the "
            "outcome: the accepted movie is the one the questionnaires mark liked, so a dialogue that ended any "
            "other way (gave up, turn limit) reads back with an unknown ending")


@lru_cache(maxsize=1 << 14)
def _pattern(title: str) -> re.Pattern[str]:
    """'The Matrix' -> the title's words with any punctuation between, the article optional, an optional year."""
    words = [re.escape(m.group()) for m in TOKEN_RE.finditer(title)]
    article = ""
    if len(words) > 1 and words[0].lower() in ("the", "a", "an"):
        article, words = rf"(?:{words[0]}\s+)?", words[1:]
    body = r"[\W_]{0,3}".join(words)
    return re.compile(rf"(?<!\w){article}{body}(?!\w)(?:\s*\(\s*\d{{4}}\s*\))?", re.IGNORECASE)


def place_mentions(text: str, items: list[Item]) -> tuple[str, list[str]]:
    """`text` with each item's title replaced by @<item_id>, and the ids placed (longest titles first)."""
    placed = []
    for item in sorted(items, key=lambda i: -len(i.title)):
        text, n = _pattern(item.title).subn(f"@{item.item_id}", text)
        if n:
            placed.append(item.item_id)
    return text, placed


def redial_record(row: dict[str, Any], catalog: Catalog, notes: Counter) -> dict[str, Any]:
    messages, turns = row["messages"] or [], row["turns"] or []
    aligned = len(turns) == len(messages)
    out_messages, mentioned, suggested = [], {}, []
    for k, message in enumerate(messages):
        is_user = message["role"] == "user"
        ids = (turns[k]["item_ids"] or []) if aligned and not is_user else catalog.ground(message["content"] or "")
        items = [item for i in dict.fromkeys(ids) if (item := catalog.get(i)) is not None]
        text, placed = place_mentions(message["content"] or "", items)
        notes["grounded titles not found in the text (kept in movieMentions)"] += len(items) - len(placed)
        for item in items:
            mentioned.setdefault(item.item_id, item)
            if not is_user and item.item_id not in suggested:
                suggested.append(item.item_id)
        out_messages.append({"timeOffset": k, "text": text, "senderWorkerId": SEEKER if is_user else RECOMMENDER,
                             "messageId": k})
    accepted = row.get("accepted_item_id")
    questions = {i: {"suggested": int(i in suggested), "seen": 2, "liked": 1 if i == accepted else 2}
                 for i in mentioned}
    return {"movieMentions": {i: item.display for i, item in mentioned.items()},
            "respondentQuestions": questions, "messages": out_messages,
            "conversationId": str(row["conversation_index"]), "respondentWorkerId": RECOMMENDER,
            "initiatorWorkerId": SEEKER, "initiatorQuestions": questions}
