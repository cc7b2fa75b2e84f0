"""Teacher-quality figures: what a corpus would teach a model trained on it. Whether the recommender offers one item
at a time, whether the user turns suggestions down and says why in its target's terms, whether it wrote its
acceptances itself, repeats itself, and opens by saying what it wants (pure Python; values in text are found by
interplay.common.attributes, the rule the generator writes user turns by).

    teacher = TeacherQuality(items)         # items: item_id -> (title, attributes); None: no catalog
    teacher.add(row, turns, target)         # every row; target: {name: [wanted values]}
    teacher.result()                        # {figure: {"share", "count", "denominator"}}

docs/report.md defines each figure and its denominator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from interplay.common.attributes import missing, named_values, wanted_values
from interplay.common.roles import PROTOCOL_ACCEPT_NOTE
from interplay.report.decisions import accepting_turn, distinct_items, proportion
from interplay.report.task import Items

FIGURES = ("one_item_turns", "rejects_before_accept", "rejections_with_reason", "written_acceptances",
           "repeated_user_turns", "openings_naming_attributes")

_SPACES = re.compile(r"\s+")
_TRAILING = re.compile(r"[\W_]+$")


def normalised(text: str | None) -> str:
    """Casefolded, whitespace collapsed, trailing punctuation gone: "Sounds good!" and "sounds  good" are one."""
    return _TRAILING.sub("", _SPACES.sub(" ", (text or "").casefold()).strip())


def rejection_reasons(item: Mapping[str, Sequence[str]], target: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The values a rejection of `item` can give as its reason: the wanted values of each wanted attribute the item
    does not meet ("I'd like something from the 90s"), and the values the item has of a wanted attribute that the
    target does not want ("not a horror film"). Attributes the target wants nothing of give no reason."""
    reasons = missing(item, target)
    for name, wanted in wanted_values(target).items():
        unwanted = [v for v in item.get(name) or () if v.casefold() not in wanted]
        if unwanted:
            reasons[name] = reasons.get(name, []) + unwanted
    return reasons


class TeacherQuality:
    """Counts of each figure, a row at a time: `counts[figure]` = [dialogues or turns that have it, denominator]."""

    def __init__(self, items: Items | None):
        self.items = items  # None: no catalog, so no rejection can be checked for a reason
        self.counts = {figure: [0, 0] for figure in FIGURES}

    def _count(self, figure: str, hit: Any) -> None:
        counts = self.counts[figure]
        counts[0] += bool(hit)
        counts[1] += 1

    def add(self, row: Mapping[str, Any], turns: Sequence[Mapping[str, Any]],
            target: Mapping[str, Sequence[str]]) -> None:
        for turn in turns:
            if turn["role"] == "recommender":
                self._count("one_item_turns", len(distinct_items(turn)) == 1)
        accept_at = accepting_turn(row, turns)
        # A rejection: the user answers a turn that suggested an item and does not take it (the accepting turn
        # is the one answer that does; it ends the dialogue, so every rejection comes before it).
        rejections = [k for k, turn in enumerate(turns) if turn["role"] == "user" and k != accept_at and k > 0
                      and turns[k - 1]["role"] == "recommender" and turns[k - 1].get("item_ids")]
        self._count("rejects_before_accept", rejections)
        for k in rejections:
            self._add_reason(turns[k], distinct_items(turns[k - 1])[0], target)
        if accept_at is not None:
            self._count("written_acceptances", turns[accept_at].get("note") != PROTOCOL_ACCEPT_NOTE)
        user_turns = [turn for turn in turns if turn["role"] == "user"]
        seen: set[str] = set()
        for turn in user_turns:
            text = normalised(turn.get("text"))
            self._count("repeated_user_turns", text in seen)
            seen.add(text)
        if user_turns and wanted_values(target):
            self._count("openings_naming_attributes", named_values(user_turns[0].get("text") or "", target))

    def _add_reason(self, rejection: Mapping[str, Any], item: str, target: Mapping[str, Sequence[str]]) -> None:
        if self.items is None or item not in self.items or not wanted_values(target):
            return  # the item's attributes, or what the user wants, unknown: nothing to check the text against
        reasons = rejection_reasons(self.items[item][1], target)
        self._count("rejections_with_reason", named_values(rejection.get("text") or "", reasons))

    def result(self) -> dict[str, dict[str, Any]]:
        return {figure: {"share": proportion(count, of), "count": count, "denominator": of}
                for figure, (count, of) in self.counts.items()}
