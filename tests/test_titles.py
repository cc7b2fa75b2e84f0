"""The one title normaliser (interplay.common.titles): what counts as naming a title."""

from __future__ import annotations

import pytest

from interplay.common.titles import fix_title, mentions, normalize


@pytest.mark.parametrize("spelling", ["The Matrix", "Matrix, The", " MATRIX! ", "the matrix"])
def test_spellings_of_one_title_share_a_key(spelling: str) -> None:
    assert normalize(spelling) == "matrix"


@pytest.mark.parametrize(("text", "title", "named"), [
    ("have you seen the matrix? great", "Matrix, The", True),
    ("I'd go for Heat tonight", "Heat (1995)", True),              # the year is no part of the name
    ("something from 1995 maybe", "Heat (1995)", False),           # ... and not a name of its own
    ("the heater is broken", "Heat (1995)", False),                # whole words only
    ("Se7en is on my list", "Seven (a.k.a. Se7en) (1995)", True),  # alternative names count
    ("Amélie was lovely", "Amelie (Fabuleux destin d'Amélie Poulain, Le)", True),
    ("I loved it", "It (2017)", True),
])
def test_mentions(text: str, title: str, named: bool) -> None:
    assert mentions(text, title) is named


def test_one_word_titles_can_be_left_out_of_prose() -> None:
    assert mentions("I loved it", "It (2017)", min_words=2) is False
    assert mentions("pulp fiction, again", "Pulp Fiction (1994)", min_words=2) is True


def test_fix_title_moves_articles_in_alternative_names_too() -> None:
    assert fix_title("Red Violin, The (Violon rouge, Le)") == "The Red Violin (Le Violon rouge)"
