"""experiments/decisions.py: each offer is counted once, by fit, by how the reply opens and by its marker."""

from __future__ import annotations

from experiments.decisions import offers, opening, table

ITEMS = {"m1": ("Heat", {"genres": ["Crime"], "decade": ["1990s"]}),
         "m2": ("Toy Story", {"genres": ["Animation"], "decade": ["1990s"]})}
TARGET = [{"name": "genres", "values": ["Crime"]}]


def turn(role: str, raw: str, items: tuple[str, ...] = ()) -> dict:
    return {"role": role, "text": raw.replace("[ACCEPT]", "").strip(), "raw_text": raw, "item_ids": list(items)}


def test_openings_follow_the_teacher_phrases() -> None:
    assert opening("[ACCEPT] That's it! I'll watch it.") == "glad"
    assert opening("Not quite: I was hoping for a crime movie. [ACCEPT]") == "rejecting"
    assert opening("Hmm, no. I'm after a crime movie.") == "rejecting"
    assert opening("What else is there?") == "other"


def test_each_answered_offer_of_one_item_counts_once() -> None:
    rows = [
        {"target_attributes": TARGET, "turns": [
            turn("user", "A crime movie."),
            turn("recommender", "Try Toy Story (1995).", ("m2",)),
            turn("user", "No thanks, I'm in the mood for a crime movie. [ACCEPT]"),  # right words, wrong marker
        ]},
        {"target_attributes": TARGET, "turns": [
            turn("user", "A crime movie."),
            turn("recommender", "Heat (1995) or Toy Story (1995)?", ("m1", "m2")),  # two items: no offer
            turn("user", "Which is scarier?"),
            turn("recommender", "Try Heat (1995).", ("m1",)),
            turn("user", "[ACCEPT] Great, Heat it is."),
            turn("recommender", "Try Heat (1995) again.", ("m1",)),  # unanswered: no offer
        ]},
    ]
    counts = offers(rows, ITEMS)
    assert counts == {(False, "rejecting", True): 1, (True, "glad", True): 1}
    assert table(counts)[2:] == ["| fits | glad | yes | 1 |", "| does not fit | rejecting | yes | 1 |"]
