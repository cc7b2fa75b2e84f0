"""Attribute values: does an item fit what a user wants, which values does it miss, and which values does a turn
name. One rule for every stage: the teacher's shortlist and user turns (generator), and the report's decision and
teacher figures.

    fits({"genres": ["Crime", "Drama"], "decade": ["1990s"]}, {"genres": ["Drama", "War"], "decade": ["1990s"]})
        -> True: an attribute is met when the item has at least one of its wanted values, and it fits when it
           meets every wanted attribute
    named_values("Something from the nineties, maybe a comedy?", {"genres": ["Comedy"], "decade": ["1990s"]})
        -> {("genres", "Comedy"), ("decade", "1990s")}

Values are compared case-insensitively. In text a value is found in its own words and a few everyday forms of
them (plurals, "90s" and "nineties" for "1990s", "science fiction" for "Sci-Fi", "romantic" for "Romance").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

Attributes = Mapping[str, Sequence[str]]

_DECADE_RE = re.compile(r"^(1[89]|20)(\d)0s$")
_DECADE_WORDS = {1920: "twenties", 1930: "thirties", 1940: "forties", 1950: "fifties", 1960: "sixties",
                 1970: "seventies", 1980: "eighties", 1990: "nineties"}
# Everyday words for catalog values (MovieLens genres, casefolded) that are not forms of the value's own word.
_ALIASES = {"sci-fi": ("science fiction", "scifi", "sci fi"), "romance": ("romantic",), "children": ("kids",),
            "animation": ("animated",), "film-noir": ("noir",), "drama": ("dramatic",), "comedy": ("funny",),
            "thriller": ("thrilling",), "horror": ("scary",)}


def wanted_values(target: Attributes) -> dict[str, set[str]]:
    """The wanted values of each attribute that wants any, casefolded."""
    return {name: {v.casefold() for v in values} for name, values in target.items() if values}


def value_pairs(attributes: Attributes) -> frozenset[tuple[str, str]]:
    """An item's (attribute name, value) pairs, values casefolded: the form the rule compares."""
    return frozenset((name, v.casefold()) for name, values in attributes.items() for v in values)


def num_met(pairs: frozenset[tuple[str, str]], wanted: Mapping[str, set[str]]) -> int:
    """How many wanted attributes (`wanted_values`) an item with these `value_pairs` meets: it has one of the
    wanted values. Callers that test many items against one target compute both sides once."""
    return sum(1 for name, values in wanted.items() if any((name, v) in pairs for v in values))


def attribute_match(item: Attributes, target: Attributes) -> tuple[bool, float]:
    """(every target attribute met, share of target attributes met); (False, 0.0) when nothing is wanted."""
    wanted = wanted_values(target)
    if not wanted:
        return False, 0.0
    hits = num_met(value_pairs(item), wanted)
    return hits == len(wanted), hits / len(wanted)


def fits(item: Attributes, target: Attributes) -> bool:
    return attribute_match(item, target)[0]


def missing(item: Attributes, target: Attributes) -> dict[str, list[str]]:
    """The wanted attributes the item does not meet, with their wanted values: what a rejection can name."""
    have = {name: {v.casefold() for v in values} for name, values in item.items()}
    return {name: list(values) for name, values in target.items()
            if values and not {v.casefold() for v in values} & have.get(name, set())}


def surface_forms(value: str) -> list[str]:
    """How a value is written in a sentence, the catalog's own form first: "1990s" -> ["1990s", "90s",
    "nineties"], "Comedy" -> ["Comedy", "comedy", "comedies", "funny"]."""
    forms = [value]
    low = value.casefold()
    if (m := _DECADE_RE.match(low)) is not None:
        decade = int(m.group(1) + m.group(2) + "0")
        forms += [f"{m.group(2)}0s", f"'{m.group(2)}0s"]
        if decade in _DECADE_WORDS:
            forms.append(_DECADE_WORDS[decade])
    else:
        forms.append(low)
        forms.append(low[:-1] + "ies" if low.endswith("y") else low + "s")
        forms += _ALIASES.get(low, ())
    return list(dict.fromkeys(forms))


@lru_cache(maxsize=4096)
def _pattern(value: str) -> re.Pattern[str]:
    alternatives = sorted((re.escape(f).replace(r"\-", "[- ]?").replace(r"\ ", "[- ]?")
                           for f in surface_forms(value)), key=len, reverse=True)
    return re.compile(rf"(?<![\w-])(?:{'|'.join(alternatives)})(?![\w])", re.IGNORECASE)


def names_value(text: str, value: str) -> bool:
    return bool(_pattern(value).search(text))


def named_values(text: str, attributes: Attributes) -> set[tuple[str, str]]:
    """The (name, value) pairs of `attributes` that `text` names."""
    return {(name, v) for name, values in attributes.items() for v in values if names_value(text, v)}
