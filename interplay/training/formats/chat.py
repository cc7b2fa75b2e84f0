"""Reading the chat-message formats: this project's corpus rows, `messages` records and ShareGPT records.

  corpus    a shard row: messages (user = simulated user, assistant = recommender), outcome, summary, attributes
  messages  {messages: [{role: user|assistant, content}], preference_summary, target_attributes}
            (optional: dialogue_id, outcome or ending, target_item, num_context_turns); `interplay summarize`
            writes it
  sharegpt  {conversations: [{from: human|gpt, value}]}, as LLaMA-Factory and axolotl read it; the same optional
            fields as `messages` (`interplay export --format sharegpt` writes them)
"""

from __future__ import annotations

from typing import Any

from interplay.training.records import ENDINGS, SPEAKERS, Dialogue, LoadStats, make_dialogue, text_or_none

CORPUS_COLUMNS = ["conversation_id", "messages", "outcome", "preference_summary", "target_attributes",
                  "target_item_id"]


def message_turns(messages: Any, role_key: str = "role", text_key: str = "content") -> list[tuple[str, str]] | str:
    if not isinstance(messages, list):
        return "missing messages"
    turns = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get(role_key), str):
            return "message without role"
        role = m[role_key].strip().lower()
        if role == "system":  # a training prompt of another tool: ours are rendered here
            continue
        if role not in SPEAKERS:
            return f"unknown speaker {m[role_key]!r}"
        content = m.get(text_key)
        if content is not None and not isinstance(content, str):
            return "message content is not text"
        turns.append((SPEAKERS[role], (content or "").strip()))
    return turns


def corpus_record(row: dict[str, Any], stats: LoadStats) -> Dialogue | str:
    turns = message_turns(row.get("messages"))
    if isinstance(turns, str):
        return turns
    ending = ENDINGS.get(row.get("outcome") or "")
    return make_dialogue(str(row.get("conversation_id")), turns, row, ending, stats,
                         target_item=text_or_none(row.get("target_item_id")))


def _context_turns(row: dict[str, Any]) -> int:
    n = row.get("num_context_turns")
    return n if isinstance(n, int) and n > 0 else 0


def messages_record(row: Any, index: int, stats: LoadStats) -> Dialogue | str:
    if not isinstance(row, dict):
        return "record is not an object"
    turns = message_turns(row.get("messages"))
    if isinstance(turns, str):
        return turns
    ending = ENDINGS.get(str(row.get("ending") or row.get("outcome") or "").lower())
    did = row.get("dialogue_id", row.get("id", index))
    return make_dialogue(str(did), turns, row, ending, stats, target_item=text_or_none(row.get("target_item")),
                         persona=text_or_none(row.get("persona")), num_context_turns=_context_turns(row))


def sharegpt_record(row: Any, index: int, stats: LoadStats) -> Dialogue | str:
    if not isinstance(row, dict):
        return "record is not an object"
    if not isinstance(row.get("conversations"), list):
        return "missing conversations"
    turns = message_turns(row["conversations"], "from", "value")
    if isinstance(turns, str):
        return turns.replace("missing messages", "missing conversations")
    ending = ENDINGS.get(str(row.get("ending") or row.get("outcome") or "").lower())
    did = row.get("dialogue_id", row.get("id", index))
    return make_dialogue(str(did), turns, row, ending, stats, target_item=text_or_none(row.get("target_item")),
                         num_context_turns=_context_turns(row))
