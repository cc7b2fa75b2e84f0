"""Retrieval of catalog candidates from what the user said (interplay/generator/inputs/retrieval.py)."""

from __future__ import annotations

import pytest

from conftest import make_catalog
from interplay.generator.inputs.catalog import Catalog, Item
from interplay.generator.inputs.retrieval import CandidateIndex, query_tokens, user_text


@pytest.mark.parametrize("words", ["90s", "'90s", "90's", "nineties", "1990s", "1994", "the Nineties"])
def test_era_words_mean_a_decade(words: str) -> None:
    assert "decade1990" in query_tokens(f"something from the {words}")


def test_seventies_and_twenties() -> None:
    assert "decade1970" in query_tokens("a 70s thriller") and "decade1920" in query_tokens("the twenties")
    assert not any(t.startswith("decade") for t in query_tokens("I have 10 minutes"))


def test_genre_words_and_stopwords() -> None:
    tokens = query_tokens("I'll want something funny and scary, I don't like long movies")
    assert {"comedy", "horror"} <= set(tokens)
    assert not {"ill", "want", "something", "dont", "like", "movies", "i"} & set(tokens)


def test_search_matches_decade_and_genre_and_excludes() -> None:
    index = CandidateIndex(make_catalog())
    assert index.search("a sci-fi film from the seventies", 1) == ["m5"]  # Alien (1979)
    assert index.search("sci-fi from the nineties", 1) == ["m4"]  # The Matrix (1999)
    assert index.search("sci-fi from the nineties", 1, exclude=["m4"]) == ["m5"]
    assert index.search("zzz qqq", 3) == ["m1", "m2", "m3"]  # nothing matches: the catalog's first items


def test_search_never_returns_more_than_there_is() -> None:
    index = CandidateIndex(make_catalog())
    assert len(index.search("crime", 10)) == 7
    assert index.search("crime", 3, exclude=[f"m{i}" for i in range(1, 8)]) == []


def test_a_catalog_of_bare_titles_has_nothing_to_match_on() -> None:
    assert not CandidateIndex.has_attributes(Catalog([Item("a", "Alpha", None), Item("b", "Beta", None)]))
    assert CandidateIndex.has_attributes(make_catalog())


def test_user_text_is_the_users_turns_only() -> None:
    history = [("user", "crime please"), ("recommender", "Heat (1995)?"), ("user", "older")]
    assert user_text(history) == "crime please\nolder"
