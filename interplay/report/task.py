"""Task figures of one dialogue: the recommendation lists Recall@k reads, leakage, attribute matches and their
chance level (pure Python; the title rule is interplay.common.titles, the one the generator grounds with).

Rows are dicts with the corpus columns: `turns` [{role, text, item_ids, candidate_item_ids?}],
`recommended_item_ids`, `target_item_id`, `target_attributes` [{name, values}].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from interplay.common.attributes import attribute_match, wanted_values
from interplay.common.titles import mentions

# A one-word title ("Heat", "Up") is too often an ordinary word, so in text a title must have two words or more
# to count; a grounded mention (the turn's item_ids) counts whatever its length.
MIN_TITLE_WORDS = 2

Items = Mapping[str, tuple[str, Mapping[str, Sequence[str]]]]  # the catalog: item_id -> (title, attributes)


def attributes_dict(value: Any) -> dict[str, list[str]]:
    """The corpus/catalog attribute column ([{name, values}]) or a plain mapping -> {name: [values]}."""
    if isinstance(value, Mapping):
        return {str(k): [v] if isinstance(v, str) else list(v or []) for k, v in value.items()}
    return {a["name"]: list(a["values"] or []) for a in value or () if a.get("name")}


class ChanceIndex:
    """Share of catalog items that match every target attribute: what the match score would be if the accepted
    item were drawn from the catalog at random. An inverted index (attribute, value) -> items, and a cache per
    distinct target, keep it cheap on a large catalog."""

    def __init__(self, items: Items):
        self.num_items = len(items)
        self.index: dict[tuple[str, str], set[int]] = {}
        for k, (_, attributes) in enumerate(items.values()):
            for name, values in attributes.items():
                for v in values:
                    self.index.setdefault((name, v.casefold()), set()).add(k)
        self.cache: dict[frozenset, float | None] = {}

    def share(self, target: Mapping[str, Sequence[str]]) -> float | None:
        """None when the target wants no attribute (such a dialogue has no match score either)."""
        wanted = wanted_values(target)
        key = frozenset((name, frozenset(values)) for name, values in wanted.items())
        if key not in self.cache:
            matching: set[int] | None = None
            for name, values in wanted.items():
                per_attribute = set().union(*(self.index.get((name, v), set()) for v in values))
                matching = per_attribute if matching is None else matching & per_attribute
            self.cache[key] = None if matching is None or not self.num_items else len(matching) / self.num_items
        return self.cache[key]


def final_list(turns: Sequence[Mapping[str, Any]]) -> list[str]:
    """The dialogue's last recommendation list: the items of the last recommender turn that named any, in the
    order the turn names them (iEvaLM's Recall reads the last turn with recommended items). [] if none did."""
    for turn in reversed(turns):
        if turn["role"] == "recommender" and turn.get("item_ids"):
            return list(turn["item_ids"])
    return []


def names_target(turn: Mapping[str, Any], target: str, title: str | None) -> bool:
    """Whether a turn names the target: grounded to it, or its title (two words or more) in the text."""
    if target in (turn.get("item_ids") or ()):
        return True
    return bool(title) and mentions(turn.get("text") or "", title, min_words=MIN_TITLE_WORDS)


def leakage(turns: Sequence[Mapping[str, Any]], target: str, title: str | None) -> tuple[bool, bool]:
    """(a user turn names the target before any recommender turn did, a user turn names it at all). Only the
    first is leakage: a user who repeats a title the recommender suggested knows nothing it was not told."""
    recommended = leaked = named = False
    for turn in turns:
        if not names_target(turn, target, title):
            continue
        if turn["role"] == "recommender":
            recommended = True
        else:
            named = True
            leaked = leaked or not recommended
    return leaked, named


def candidate_lists(turns: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The catalog candidates shown to the recommender, one list per turn that carries any (older corpora have
    no `candidate_item_ids`: no lists)."""
    return [list(c) for turn in turns if (c := turn.get("candidate_item_ids"))]
