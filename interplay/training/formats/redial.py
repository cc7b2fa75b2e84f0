"""Reading ReDial (train_data.jsonl / test_data.jsonl, one conversation per line).

A record: `conversationId`, `initiatorWorkerId` (the seeker), `respondentWorkerId` (the recommender), `messages`
({timeOffset, text, senderWorkerId, messageId}), `movieMentions` ({"<id>": "Title (Year)"}), and the two
questionnaires `initiatorQuestions` / `respondentQuestions` ({"<id>": {suggested, seen, liked}}).

  - `@<id>` in the text becomes the movie's title; an id missing from movieMentions skips the record
  - consecutive messages of one sender are joined into one turn; roles come from the worker ids
  - acceptance: the last movie the recommender suggested that the seeker liked (the seeker's questionnaire, else
    the recommender's); the recommender's turns after the seeker's last one are dropped then, so the dialogue
    ends on the seeker's acceptance as the generator's protocol does
  - target attributes: the accepted movie's catalog attributes when a catalog is given and the title matches
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from interplay.training.records import Dialogue, LoadStats, make_dialogue

_MENTION = re.compile(r"@(\w+(?:[-:]\w+)*)")
AttributesOf = Callable[[str], "dict[str, list[str]] | None"]


class _Unresolvable(Exception):
    pass


def _mapping(value: Any) -> dict[str, Any]:
    """{id: value}; the release writes [] for an empty mapping. The Parquet copies of ReDial hold lists of
    {movieId, movieName} and {movieId, suggested, seen, liked} instead: read the same."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(v["movieId"]): v.get("movieName", v) for v in value if isinstance(v, dict) and "movieId" in v}
    return {}


def _is(value: Any, wanted: int) -> bool:
    return value == wanted or value == str(wanted)


def accepted_movie(row: dict[str, Any], suggested_in_order: list[str]) -> str | None:
    answers = _mapping(row.get("initiatorQuestions")) or _mapping(row.get("respondentQuestions"))
    liked = [mid for mid in suggested_in_order
             if isinstance(answers.get(mid), dict) and _is(answers[mid].get("liked"), 1)
             and _is(answers[mid].get("suggested"), 1)]
    return liked[-1] if liked else None


def redial_record(row: Any, index: int, stats: LoadStats, attributes_of: AttributesOf | None = None,
                  ) -> Dialogue | str:
    if not isinstance(row, dict):
        return "record is not an object"
    messages = row.get("messages")
    if not isinstance(messages, list):
        return "missing messages"
    roles = {row.get("initiatorWorkerId"): "user", row.get("respondentWorkerId"): "recommender"}
    if None in roles or len(roles) != 2:
        return "missing worker ids"
    titles = {mid: " ".join(t.split()) for mid, t in _mapping(row.get("movieMentions")).items()
              if isinstance(t, str) and t.strip()}
    parts: list[tuple[str, list[str]]] = []
    suggested: list[str] = []  # movie ids in the order the recommender names them

    for m in messages:
        if not isinstance(m, dict):
            return "message is not an object"
        speaker = roles.get(m.get("senderWorkerId"))
        if speaker is None:
            return "speaker outside the two roles"
        if not isinstance(m.get("text"), str):
            return "message without text"

        def title(match: re.Match[str], speaker: str = speaker) -> str:
            mid = match.group(1)
            if mid not in titles:
                raise _Unresolvable
            if speaker == "recommender":
                suggested.append(mid)
            return titles[mid]

        try:
            text = " ".join(_MENTION.sub(title, m["text"]).split())
        except _Unresolvable:
            return "unresolvable @id"
        if parts and parts[-1][0] == speaker:
            parts[-1][1].append(text)
        else:
            parts.append((speaker, [text]))
    turns = [(speaker, "\n".join(t for t in texts if t)) for speaker, texts in parts]
    accepted = accepted_movie(row, suggested)
    if accepted is not None and turns and turns[-1][0] == "recommender" and len(turns) > 1:
        while turns and turns[-1][0] == "recommender":
            turns.pop()
        stats.repaired["dropped the recommender's turns after acceptance"] += 1
    target = titles.get(accepted) if accepted is not None else None
    attributes = attributes_of(target) if target and attributes_of else None
    return make_dialogue(str(row.get("conversationId", index)), turns, {}, "accept" if accepted else None, stats,
                         target_item=target, attributes=attributes)
