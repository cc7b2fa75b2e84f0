"""Decision figures: does the user simulator accept what fits its target and turn down what does not? With the
shares they rest on and their Wilson intervals (pure Python; the fit rule is interplay.common.attributes, the one
the generator's teacher shortlists with).

    decisions = Decisions(items)            # items: item_id -> (title, attributes); None: no catalog
    decisions.add(row, turns, target)       # every row; target: {name: [wanted values]}
    decisions.result()                      # decision_precision, decision_recall, offers_that_fit, counts

An offer is a recommender turn that grounded exactly one item: the only turns whose decision (accept or go on)
is about one item, so about whether that item fits. docs/report.md defines each figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from interplay.common.attributes import fits, wanted_values
from interplay.report.task import Items

Z95 = 1.96  # the normal quantile of a two-sided 95% interval


def proportion(count: float, of: int) -> float | None:
    """count / of to 4 places; None when there is nothing to divide by."""
    return round(count / of, 4) if of else None


def wilson_interval(successes: int, n: int, z: float = Z95) -> list[float] | None:
    """Wilson's score interval [low, high] of a binomial share, to 4 places; None for n = 0. Unlike the normal
    approximation it stays inside [0, 1] and is not empty at 0 or n successes, which matters at a few dozen
    dialogues (Wilson 1927; Brown, Cai & DasGupta 2001)."""
    if n <= 0:
        return None
    p = successes / n
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    # At 0 or n successes one bound is 0 or 1 exactly, up to float rounding: clamped so it never prints -0.0.
    return [round(max(centre - half, 0.0), 4), round(min(centre + half, 1.0), 4)]


def distinct_items(turn: Mapping[str, Any]) -> list[str]:
    """The turn's grounded items, each once, in the order the text names them."""
    return list(dict.fromkeys(turn.get("item_ids") or ()))


def accepting_turn(row: Mapping[str, Any], turns: Sequence[Mapping[str, Any]]) -> int | None:
    """Index of the user turn that accepted: an accepted dialogue ends on it. None when nothing was accepted."""
    if row.get("outcome") == "accepted" and turns and turns[-1]["role"] == "user":
        return len(turns) - 1
    return None


class Decisions:
    """Offers and acceptances of a corpus, a row at a time. Rows whose target wants no attribute are left out
    (nothing can fit or not), and so are items missing from the catalog (their attributes are unknown)."""

    def __init__(self, items: Items | None):
        self.items = items  # None: no catalog, no attributes, no figure
        self.num_acceptances = self.fitting_acceptances = 0
        self.num_offers = self.num_fitting_offers = self.accepted_fitting_offers = 0

    def add(self, row: Mapping[str, Any], turns: Sequence[Mapping[str, Any]],
            target: Mapping[str, Sequence[str]]) -> None:
        if self.items is None or not wanted_values(target):
            return
        accept_at = accepting_turn(row, turns)
        accepted = row.get("accepted_item_id") if accept_at is not None else None
        # Counted from accepted_item_id itself, so an item accepted from a list of several counts too.
        if accepted in self.items:
            self.num_acceptances += 1
            self.fitting_acceptances += fits(self.items[accepted][1], target)
        offers = [(k, ids[0]) for k, turn in enumerate(turns)
                  if turn["role"] == "recommender" and len(ids := distinct_items(turn)) == 1]
        # The offer the acceptance answers: the last one before the accepting turn, if its item is the one taken.
        before = [offer for offer in offers if accept_at is not None and offer[0] < accept_at]
        taken = before[-1] if before and before[-1][1] == accepted else None
        for offer in offers:
            item = offer[1]
            if item not in self.items:
                continue
            self.num_offers += 1
            if fits(self.items[item][1], target):
                self.num_fitting_offers += 1
                self.accepted_fitting_offers += offer == taken

    def result(self) -> dict[str, Any] | None:
        if self.items is None:
            return None
        return {"decision_precision": proportion(self.fitting_acceptances, self.num_acceptances),
                "decision_precision_ci95": wilson_interval(self.fitting_acceptances, self.num_acceptances),
                "decision_recall": proportion(self.accepted_fitting_offers, self.num_fitting_offers),
                "offers_that_fit": proportion(self.num_fitting_offers, self.num_offers),
                "num_acceptances": self.num_acceptances,
                "num_offers": self.num_offers,
                "num_fitting_offers": self.num_fitting_offers}
