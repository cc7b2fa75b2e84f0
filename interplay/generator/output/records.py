"""The corpus row: the explicit pyarrow schema of a shard and the conversion of a finished conversation into it.

`messages` is a list of {role, content} with user = simulated user and assistant = recommender, so chat-template
SFT and `datasets.load_dataset("parquet", ...)` take it as is. `turns` keeps per-turn detail (raw text, token
counts, grounded item ids, parsing notes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from interplay.common.roles import ROLES
from interplay.generator.dialogue.conversation import Conversation
from interplay.generator.dialogue.prompts import corpus_messages
from interplay.generator.inputs.seeds import ATTRIBUTES_TYPE, attributes_to_arrow

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
TURN_TYPE = pa.struct([
    ("role", pa.string()),
    ("text", pa.string()),
    ("raw_text", pa.string()),
    ("num_prompt_tokens", pa.int32()),
    ("num_output_tokens", pa.int32()),
    ("num_cached_tokens", pa.int32()),
    ("finish_reason", pa.string()),
    ("item_ids", pa.list_(pa.string())),
    ("note", pa.string()),
    ("candidate_item_ids", pa.list_(pa.string())),  # recommender turns: the catalog items it was shown first
])

SCHEMA = pa.schema([
    pa.field("conversation_id", pa.string(), nullable=False),
    pa.field("conversation_index", pa.int64(), nullable=False),
    pa.field("seed_id", pa.string(), nullable=False),
    pa.field("protocol", pa.string()),              # reference_free, reference, or single_llm (the baseline)
    pa.field("messages", pa.list_(MESSAGE_TYPE)),
    pa.field("turns", pa.list_(TURN_TYPE)),
    pa.field("outcome", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("num_turns", pa.int32()),
    pa.field("accepted_item_id", pa.string()),
    pa.field("recommended_item_ids", pa.list_(pa.string())),
    pa.field("target_item_id", pa.string()),
    pa.field("target_recommended", pa.bool_()),
    pa.field("target_rank", pa.int32()),
    pa.field("preference_summary", pa.string()),
    pa.field("target_attributes", ATTRIBUTES_TYPE),
    pa.field("user_model", pa.string()),
    pa.field("user_adapter", pa.string()),
    pa.field("user_sampling", pa.string()),        # JSON of the SamplingParams given for the role
    pa.field("recommender_model", pa.string()),
    pa.field("recommender_adapter", pa.string()),
    pa.field("recommender_sampling", pa.string()),
])


@dataclass(frozen=True, slots=True)
class RoleInfo:
    """What served a role, stored with every row."""
    model: str
    adapter: str | None
    sampling: dict[str, Any]


def to_record(conv: Conversation, roles: dict[str, RoleInfo], *, protocol: str = "reference_free") -> dict[str, Any]:
    seed = conv.seed
    rank = conv.target_rank
    record = {
        "conversation_id": conv.conversation_id,
        "conversation_index": conv.conversation_index,
        "seed_id": seed.seed_id,
        "protocol": protocol,
        "messages": corpus_messages(conv.history),
        "turns": [{
            "role": t.role, "text": t.text, "raw_text": t.raw_text, "num_prompt_tokens": t.num_prompt_tokens,
            "num_output_tokens": t.num_output_tokens, "num_cached_tokens": t.num_cached_tokens,
            "finish_reason": t.finish_reason, "item_ids": t.item_ids, "note": t.note,
            "candidate_item_ids": t.candidate_item_ids,
        } for t in conv.turns],
        "outcome": conv.outcome.value if conv.outcome else None,
        "error": conv.error,
        "num_turns": len(conv.turns),
        "accepted_item_id": conv.accepted_item_id,
        "recommended_item_ids": conv.recommended_item_ids,
        "target_item_id": seed.target_item_id,
        "target_recommended": rank is not None,
        "target_rank": rank,
        "preference_summary": seed.preference_summary,
        "target_attributes": attributes_to_arrow(seed.target_attributes),
    }
    for role in ROLES:
        info = roles[role]
        record[f"{role}_model"] = info.model
        record[f"{role}_adapter"] = info.adapter
        record[f"{role}_sampling"] = json.dumps(info.sampling, sort_keys=True)
    return record


def empty_stats() -> dict[str, Any]:
    return {"num_rows": 0, "outcomes": {},
            "tokens": {role: {"prompt": 0, "output": 0, "cached": 0} for role in ROLES}}


def add_stats(stats: dict[str, Any], record: dict[str, Any]) -> None:
    """Accumulate a row's outcome and per-role token counts (manifest totals are sums of these)."""
    stats["num_rows"] += 1
    stats["outcomes"][record["outcome"]] = stats["outcomes"].get(record["outcome"], 0) + 1
    for turn in record["turns"] or ():
        tokens = stats["tokens"][turn["role"]]
        tokens["prompt"] += turn["num_prompt_tokens"] or 0
        tokens["output"] += turn["num_output_tokens"] or 0
        tokens["cached"] += turn["num_cached_tokens"] or 0


def merge_stats(total: dict[str, Any], part: dict[str, Any]) -> None:
    total["num_rows"] += part["num_rows"]
    for outcome, n in part["outcomes"].items():
        total["outcomes"][outcome] = total["outcomes"].get(outcome, 0) + n
    for role in ROLES:
        for key, n in part["tokens"][role].items():
            total["tokens"][role][key] += n
