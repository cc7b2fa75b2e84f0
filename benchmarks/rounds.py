"""Rounds of the compared variants (throughput.py): the order they run in, and each ratio's median and spread.

One round of each variant in a fixed order lets anything that drifts during the benchmark (a machine warming up,
another job starting, a cache filling) favour whichever variant runs first or last. So the variants run in
rounds of alternating order, a b d, d b a, a b d, ..., and each ratio is reported as the median over rounds with
its spread (min..max). A ratio whose spread contains 1.0 is "no difference": the rounds do not tell the two
variants apart, whatever its median says against a target.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

NO_DIFFERENCE = "no difference"


def round_orders(variants: Sequence[str], num_rounds: int) -> list[list[str]]:
    """The variants' order in each round: as given, then reversed, then as given, ..."""
    return [list(variants) if r % 2 == 0 else list(reversed(variants)) for r in range(num_rounds)]


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median and min..max of one ratio over rounds."""
    return {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values),
            "rounds": list(values)}


def verdict(summary: dict[str, Any], minimum: float) -> str:
    """"no difference" when the spread contains 1.0, else whether the median meets `minimum`."""
    if summary["min"] <= 1.0 <= summary["max"]:
        return NO_DIFFERENCE
    return "met" if summary["median"] >= minimum else "not met"


def round_ratios(rounds: Sequence[dict[str, dict]], this: str, other: str, field: str,
                 fallback: dict[str, dict] | None = None) -> list[float]:
    """this/other of `field` in each round where both ran; `other` comes from `fallback` in rounds without it (a
    variant that runs once, like (c))."""
    values = []
    for rnd in rounds:
        a = (rnd.get(this) or {}).get(field)
        b = (rnd.get(other) or (fallback or {}).get(other) or {}).get(field)
        if a and b:
            values.append(round(a / b, 3))
    return values
