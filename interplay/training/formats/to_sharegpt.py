"""Writing a corpus row as a ShareGPT record: `conversations` of {from: human|gpt, value}, as LLaMA-Factory and
axolotl read it (human = the user, gpt = the recommender). The summary, target attributes, outcome and held-out
target ride along as extra fields that those tools ignore and `interplay train` reads back."""

from __future__ import annotations

from collections import Counter
from typing import Any

NOT_KEPT = "ShareGPT keeps no per-turn item ids and no accepted item (the grounding stays in the corpus)"


def attributes_dict(value: Any) -> dict[str, list[str]] | None:
    """The corpus column ([{name, values}]) as {name: values}."""
    return {a["name"]: list(a["values"]) for a in value} if value else None


def sharegpt_record(row: dict[str, Any], catalog: Any, notes: Counter) -> dict[str, Any]:
    return {"id": row["conversation_id"],
            "conversations": [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]}
                              for m in row["messages"] or []],
            "preference_summary": row.get("preference_summary"),
            "target_attributes": attributes_dict(row.get("target_attributes")),
            "outcome": row["outcome"], "target_item": row.get("target_item_id")}
