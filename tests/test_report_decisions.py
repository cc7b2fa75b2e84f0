"""`interplay report`: the decision figures, the teacher-quality figures and the Wilson intervals, on a hand-built
corpus against values worked out by hand (every row's comment says what it contributes), and their tables."""

from __future__ import annotations

import math

import pytest

from interplay.common.roles import PROTOCOL_ACCEPT_NOTE
from interplay.report.decisions import wilson_interval
from interplay.report.metrics import corpus_metrics
from interplay.report.render import markdown, text_table
from interplay.report.summary import HEADLINE_KEYS, headline_figures
from interplay.report.teacher import normalised, rejection_reasons


def T(role: str, text: str, item_ids: list[str] = (), note: str | None = None) -> dict:
    return {"role": role, "text": text, "raw_text": text, "item_ids": list(item_ids), "note": note,
            "num_output_tokens": 3}


CRIME_90S = [{"name": "genres", "values": ["Crime"]}, {"name": "decade", "values": ["1990s"]}]

ITEMS = {  # against CRIME_90S: a and c fit, b and d do not
    "a": ("Heat (1995)", {"genres": ["Crime", "Thriller"], "decade": ["1990s"]}),
    "b": ("Alien (1979)", {"genres": ["Horror", "Sci-Fi"], "decade": ["1970s"]}),
    "c": ("Fargo (1996)", {"genres": ["Crime", "Comedy"], "decade": ["1990s"]}),
    "d": ("Airplane! (1980)", {"genres": ["Comedy"], "decade": ["1980s"]}),
}


def row(outcome: str, turns: list[dict], accepted: str | None = None, target: list[dict] = CRIME_90S) -> dict:
    return {"outcome": outcome, "accepted_item_id": accepted, "target_item_id": None, "recommended_item_ids": [],
            "target_attributes": target, "turns": turns}


ROWS = [
    # Offers b (does not fit), then a (fits), which the user accepts in its own words. The rejection of b names a
    # wanted decade b lacks ("90s"): reasoned. The opening names both target values.
    row("accepted", [T("user", "I'd like a crime film from the nineties"), T("recommender", "Alien (1979)?", ["b"]),
                     T("user", "No, I want something from the 90s"), T("recommender", "Then Heat (1995)", ["a"]),
                     T("user", "Perfect, I'll take it")], accepted="a"),
    # A list of two (not an offer); the rejection of its first item, a, names nothing: not reasoned. Then c named
    # twice in one turn, one item: an offer, which fits, accepted by the protocol (not written). The last user
    # turn repeats the second once normalised. The opening names nothing.
    row("accepted", [T("user", "Something good tonight"), T("recommender", "Heat (1995) or Fargo (1996)", ["a", "c"]),
                     T("user", "Hmm, not sure"), T("recommender", "Fargo (1996), yes, Fargo (1996)", ["c", "c"]),
                     T("user", "hmm,  NOT sure!", note=PROTOCOL_ACCEPT_NOTE)], accepted="c"),
    # A fitting offer (c) turned down for a value it has that the target does not want ("funny": Comedy):
    # reasoned. Then d, which does not fit, turned down by the last turn, naming nothing. Never accepted.
    row("gave_up", [T("user", "Any crime movie?"), T("recommender", "Fargo (1996)", ["c"]),
                    T("user", "I'd rather not, too funny"), T("recommender", "Airplane! (1980)", ["d"]),
                    T("user", "bye")]),
    # d accepted from a list of two: an acceptance that does not fit, and no offer at all.
    row("accepted", [T("user", "hello"), T("recommender", "Alien (1979) or Airplane! (1980)", ["b", "d"]),
                     T("user", "Airplane! sounds fun")], accepted="d"),
    # The target wants nothing: no offer, no acceptance, no reason to check, no opening; the rejection counts.
    row("max_turns", [T("user", "crime please"), T("recommender", "Heat (1995)", ["a"]), T("user", "no thanks")],
        target=[]),
    # The offered item is not in the catalog: neither an offer nor a rejection whose reason can be checked.
    row("max_turns", [T("user", "a thriller"), T("recommender", "Unknown (2001)", ["zz"]),
                      T("user", "no, a crime film")]),
]


@pytest.fixture(scope="module")
def metrics() -> dict:
    return corpus_metrics(ROWS, items=ITEMS)


def solves_score_test(p0: float, successes: int, n: int, z: float = 1.96) -> bool:
    """Wilson's bounds are the p0 at which the score test is exactly at z: |p - p0| = z sqrt(p0 (1 - p0) / n)."""
    return math.isclose(abs(successes / n - p0), z * math.sqrt(p0 * (1 - p0) / n), abs_tol=1e-4)


def test_wilson_interval() -> None:
    # 13 of 60: p = 0.2167, centre (p + z²/2n) / (1 + z²/n) = 0.2337, half-width 0.1025.
    low, high = wilson_interval(13, 60)
    assert [low, high] == [0.1312, 0.3362]
    assert solves_score_test(low, 13, 60) and solves_score_test(high, 13, 60)
    assert wilson_interval(3, 6) == [0.1876, 0.8124]          # symmetric about 1/2
    assert wilson_interval(0, 4) == [0.0, 0.4899] and wilson_interval(4, 4) == [0.5101, 1.0]
    assert wilson_interval(0, 0) is None


def test_intervals_in_metrics(metrics: dict) -> None:
    assert metrics["success_rate"] == 0.5 and metrics["success_rate_ci95"] == [0.1876, 0.8124]  # 3 of 6
    # Scored: a (fits), c (fits), d (does not).
    assert metrics["match_score"]["all_attributes"] == 0.6667 and metrics["match_score"]["num_scored"] == 3
    assert metrics["match_score"]["all_attributes_ci95"] == [0.2077, 0.9385]
    empty = corpus_metrics([], items=ITEMS)
    assert empty["success_rate_ci95"] is None and empty["match_score"]["all_attributes_ci95"] is None


def test_decisions(metrics: dict) -> None:
    # Acceptances a, c (fit), d (does not): precision 2/3. Offers b, a | c | c, d (the lists of two are not
    # offers, zz is not in the catalog, the empty target's row is left out): 5, of which a, c, c fit; a and c
    # in the first two rows were accepted, c in the third was not: recall 2/3.
    assert metrics["decisions"] == {"decision_precision": 0.6667, "decision_precision_ci95": [0.2077, 0.9385],
                                    "decision_recall": 0.6667, "offers_that_fit": 0.6, "num_acceptances": 3,
                                    "num_offers": 5, "num_fitting_offers": 3}


def test_an_acceptance_from_a_list_is_no_offer() -> None:
    decisions = corpus_metrics(ROWS[3:4], items=ITEMS)["decisions"]
    assert decisions == {"decision_precision": 0.0, "decision_precision_ci95": [0.0, 0.7935],
                         "decision_recall": None, "offers_that_fit": None, "num_acceptances": 1, "num_offers": 0,
                         "num_fitting_offers": 0}


def test_only_the_last_offer_before_the_acceptance_can_be_accepted() -> None:
    # a is offered, then c; the user takes a. c was not taken, and a was answered by a turn that went on.
    turns = [T("user", "a crime film"), T("recommender", "Heat (1995)", ["a"]), T("user", "maybe"),
             T("recommender", "Fargo (1996)", ["c"]), T("user", "I'll take Heat after all", ["a"])]
    decisions = corpus_metrics([row("accepted", turns, accepted="a")], items=ITEMS)["decisions"]
    assert decisions["num_fitting_offers"] == 2 and decisions["decision_recall"] == 0.0
    assert decisions["decision_precision"] == 1.0


def test_no_catalog_no_decisions(metrics: dict) -> None:
    bare = corpus_metrics(ROWS)
    assert bare["decisions"] is None and bare["match_score"] is None
    figures = headline_figures(bare)
    assert [figures[k] for k in ("decision_precision", "decision_recall", "offers_that_fit",
                                 "match_score_ci95")] == [None] * 4
    # Without item attributes no rejection can be checked for a reason; everything else is the same.
    assert bare["teacher_quality"]["rejections_with_reason"] == {"share": None, "count": 0, "denominator": 0}
    assert ({k: v for k, v in bare["teacher_quality"].items() if k != "rejections_with_reason"}
            == {k: v for k, v in metrics["teacher_quality"].items() if k != "rejections_with_reason"})


def test_teacher_quality(metrics: dict) -> None:
    # 9 recommender turns, 7 of them with one item (c twice counts once). A rejection in every row but the
    # fourth, whose only answer accepts. Rejections checked for a reason: b ("90s", reasoned), a (no), c
    # ("funny", reasoned), d ("bye", no); the empty target's and zz's are not checked. Acceptances: two written,
    # one recorded by the protocol. 15 user turns, one a repeat. Openings of the five rows with a target: the
    # first and third name a target value ("a thriller" names none the target wants).
    assert metrics["teacher_quality"] == {
        "one_item_turns": {"share": 0.7778, "count": 7, "denominator": 9},
        "rejects_before_accept": {"share": 0.8333, "count": 5, "denominator": 6},
        "rejections_with_reason": {"share": 0.5, "count": 2, "denominator": 4},
        "written_acceptances": {"share": 0.6667, "count": 2, "denominator": 3},
        "repeated_user_turns": {"share": 0.0667, "count": 1, "denominator": 15},
        "openings_naming_attributes": {"share": 0.4, "count": 2, "denominator": 5},
    }


def test_reasons_and_normalised_text() -> None:
    target = {"genres": ["Crime"], "decade": ["1990s"]}
    # b misses both wanted values and has unwanted ones of both wanted attributes; a fits but is also a Thriller.
    assert rejection_reasons(ITEMS["b"][1], target) == {"genres": ["Crime", "Horror", "Sci-Fi"],
                                                        "decade": ["1990s", "1970s"]}
    assert rejection_reasons(ITEMS["a"][1], target) == {"genres": ["Thriller"]}
    # An attribute the target wants nothing of is no reason.
    assert rejection_reasons(ITEMS["a"][1], {"genres": ["Crime", "Thriller"], "decade": []}) == {}
    assert normalised("  Sounds   GOOD!! ") == normalised("sounds good") == "sounds good"
    assert normalised("good, fine.") == "good, fine"


def test_headline_and_tables(metrics: dict) -> None:
    corpora = [{"label": "hand", "path": "x", "mode": "interplay", "metrics": metrics}]
    figures = headline_figures(metrics)
    assert tuple(figures) == HEADLINE_KEYS
    assert {k: figures[k] for k in ("success_rate_ci95", "decision_precision", "decision_recall",
                                    "offers_that_fit")} == {"success_rate_ci95": [0.1876, 0.8124],
                                                            "decision_precision": 0.6667,
                                                            "decision_recall": 0.6667, "offers_that_fit": 0.6}
    md = markdown(corpora)
    assert "| success rate | 0.500 [0.188, 0.812] |" in md
    assert "| match score | 0.667 [0.208, 0.939] |" in md
    assert "## Decisions" in md and "| decision precision (acceptances that fit) | 0.667 [0.208, 0.939] |" in md
    assert "| acceptances / offers / fitting offers | 3 / 5 / 3 |" in md
    assert "## Teacher quality" in md and "| acceptances the user wrote itself | 0.667 (2 of 3) |" in md
    text = text_table(corpora)
    assert text.splitlines()[0].split() == ["figure", "hand"]
    assert "teacher quality" in text and "0.400 (2 of 5)" in text
    bare = markdown([{**corpora[0], "metrics": corpus_metrics(ROWS)}])
    assert "| decision precision (acceptances that fit) | n/a |" in bare
