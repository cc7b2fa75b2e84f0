"""`interplay report`: every metric on a hand-built corpus against values worked out by hand, and the command on
fake-engine corpora (one, and an Interplay corpus beside a baseline one)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
from test_baseline import replies as baseline_replies

from fake_engine import fake_open_engines, make_clients
from interplay.cli import main as cli_main
from interplay.generator.runtime.baseline import BaselineGeneration
from interplay.generator.runtime.run import Generation
from interplay.report.metrics import (
    attribute_match,
    corpus_metrics,
    distinct_n,
    names_title,
    self_bleu,
    sentence_bleu,
    title_key,
    words,
)


def T(role: str, text: str, item_ids: list[str] = (), tokens: int = 5) -> dict:
    return {"role": role, "text": text, "item_ids": list(item_ids), "num_output_tokens": tokens}


def attrs(**kw: list[str]) -> list[dict]:
    return [{"name": k, "values": v} for k, v in kw.items()]


ITEMS = {
    "m1": ("Heat", {"genres": ["Crime", "Thriller"], "decade": ["1990s"]}),
    "m2": ("Toy Story", {"genres": ["Animation", "Comedy"], "decade": ["1990s"]}),
    "m3": ("Fargo", {"genres": ["Crime", "Comedy"], "decade": ["1990s"]}),
    "m5": ("Alien", {"genres": ["Horror", "Sci-Fi"], "decade": ["1970s"]}),
    "m6": ("Pulp Fiction", {"genres": ["Crime"], "decade": ["1990s"]}),
    "m9": ("The Big Lebowski", {"genres": ["Comedy"], "decade": ["1990s"]}),
}

ROWS = [
    {"outcome": "accepted", "target_item_id": "m1", "accepted_item_id": "m5",
     "recommended_item_ids": ["m1", "m3", "m5"], "target_attributes": attrs(genres=["Sci-Fi", "Comedy"],
                                                                           decade=["1990s"]),
     "turns": [T("user", "I want a fun film"), T("recommender", "Try Heat (1995) or Fargo (1996)", ["m1", "m3"]),
               T("user", "not Heat, something else", ["m1"]),
               T("recommender", "Then Heat (1995) again or Alien (1979)", ["m1", "m5"]),
               T("user", "ok Alien", ["m5"])]},
    {"outcome": "max_turns", "target_item_id": "m6", "accepted_item_id": None,
     "recommended_item_ids": ["m2", "x1", "x2", "x3", "x4", "m6"], "target_attributes": attrs(genres=["Crime"]),
     "turns": [T("user", "I want Pulp Fiction", ["m6"]),
               T("recommender", "Try Toy Story (1995)", ["m2", "x1", "x2", "x3", "x4", "m6"])]},
    {"outcome": "gave_up", "target_item_id": None, "accepted_item_id": None, "recommended_item_ids": ["m3"],
     "target_attributes": attrs(genres=["Drama"]),
     "turns": [T("user", "hi"), T("recommender", "Fargo (1996)?", ["m3"]), T("user", "bye")]},
    {"outcome": "accepted", "target_item_id": "m9", "accepted_item_id": "m2", "recommended_item_ids": ["m2"],
     "target_attributes": attrs(genres=["comedy"], decade=["1990s"]),
     "turns": [T("user", "maybe the big lebowski tonight"), T("recommender", "Toy Story (1995)!", ["m2"]),
               T("user", "fine")]},
    {"outcome": "accepted", "target_item_id": "m3", "accepted_item_id": "m3", "recommended_item_ids": ["m3"],
     "target_attributes": attrs(genres=["Crime"]),
     "turns": [T("user", "anything"), T("recommender", "Try Fargo (1996)", ["m3"]), T("user", "great")]},
]


@pytest.fixture(scope="module")
def metrics() -> dict:
    return corpus_metrics(ROWS, items=ITEMS)


def test_words_and_distinct_n() -> None:
    assert words("Don't panic: it's 1990s-style, OK?") == ["don't", "panic", "it's", "1990s", "style", "ok"]
    assert distinct_n([["a", "b", "a", "b"]], 1) == 0.5
    assert distinct_n([["a", "b", "a", "b"]], 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert distinct_n([["a", "b"], ["b", "a"]], 2) == 1.0                  # n-grams never cross utterances
    assert distinct_n([["a"]], 2) == 0.0


def test_distinct_per_role(metrics: dict) -> None:
    # 25 user words, 23 different; 15 user bigrams, "i want" twice; 10 trigrams, all different.
    assert metrics["distinct"]["user"] == {"1": round(23 / 25, 4), "2": round(14 / 15, 4), "3": 1.0}
    assert metrics["utterance_words"]["user"] == {"mean": 2.5, "median": 1.5, "p90": 5, "max": 5}
    assert metrics["turns"] == {"mean": 3.2, "median": 3, "p90": 5, "max": 5}


def test_sentence_bleu_by_hand() -> None:
    a, b = "a b c d".split(), "a b c e".split()
    # p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0 -> 0.1; equal lengths: no brevity penalty.
    expected = (0.75 * (2 / 3) * 0.5 * 0.1) ** 0.25
    assert sentence_bleu(a, [b]) == pytest.approx(expected)
    assert self_bleu([a, b]) == pytest.approx(expected)
    assert sentence_bleu(a, [a]) == pytest.approx(1.0)
    # Shorter than its references: brevity penalty exp(1 - 3/2); p1 = 1/2, no bigram match, no 3/4-grams.
    c = ["a", "d"]
    assert sentence_bleu(c, ["a a b".split(), "a a c".split()]) == pytest.approx(
        math.exp(1 - 3 / 2) * (0.5 * 0.1 * 0.1 * 0.1) ** 0.25)


def test_self_bleu_is_the_mean_against_all_others() -> None:
    utts = ["a a b".split(), "a a c".split(), ["a", "d"], "a b c d e".split(), []]
    nonempty = [u for u in utts if u]
    naive = sum(sentence_bleu(u, nonempty[:i] + nonempty[i + 1:]) for i, u in enumerate(nonempty)) / 4
    assert self_bleu(utts) == pytest.approx(naive)
    # By hand for "a a b" against the others: p1 = 2/3 (two a's matched, b matched only by "a b c d e"...).
    assert sentence_bleu("a a b".split(), ["a a c".split(), ["a", "d"]]) == pytest.approx(
        ((2 / 3) * (1 / 2) * 0.1 * 0.1) ** 0.25)
    assert self_bleu([["x"]]) == 0.0
    # Two identical 2-word utterances: unigrams and the bigram match, no 3- or 4-grams (0.1 each).
    assert self_bleu([["x", "y"], ["x", "y"]]) == pytest.approx((1 * 1 * 0.1 * 0.1) ** 0.25)


def test_outcomes_accept_rate_and_recall(metrics: dict) -> None:
    assert metrics["num_dialogues"] == 5
    assert metrics["outcomes"]["accepted"] == {"count": 3, "share": 0.6}
    assert metrics["accept_rate"] == 0.6
    # Targets in 4 dialogues: rank 1, rank 6, never, rank 1.
    assert metrics["recall"] == {"@1": 0.5, "@5": 0.5, "@10": 0.75, "num_with_target": 4}


def test_match_score(metrics: dict) -> None:
    # Alien for (Sci-Fi or Comedy, 1990s): genre yes, decade no; Toy Story for (comedy, 1990s): both (any case);
    # Fargo for Crime: yes.
    assert attribute_match(ITEMS["m5"][1], {"genres": ["Sci-Fi", "Comedy"], "decade": ["1990s"]}) == (False, 0.5)
    assert metrics["match_score"] == {"all_attributes": round(2 / 3, 4), "mean_attribute_share": round(2.5 / 3, 4),
                                      "num_accepted_in_catalog": 3}
    assert corpus_metrics(ROWS)["match_score"] is None  # no catalog, no match score


def test_leakage(metrics: dict) -> None:
    # Heat named by the user after the recommender named it; Pulp Fiction named before any recommendation;
    # "the big lebowski" in lower case (not grounded) found by its normalised title; Fargo never named by the user.
    assert metrics["leakage"] == {"user_names_target": 0.75, "before_recommended": 0.5, "num_with_target": 4}
    assert title_key("The Big Lebowski (1998)") == "big lebowski"
    assert names_title("Maybe THE BIG LEBOWSKI?", "big lebowski")
    assert not names_title("it is heat tonight", "heat")  # one-word titles only count when grounded


def test_repeated_recommendations(metrics: dict) -> None:
    # 13 item mentions in recommender turns, one of them (Heat, again) a repeat, in one dialogue of five.
    assert metrics["repeated_recommendations"] == {"share_of_mentions": round(1 / 13, 4),
                                                   "dialogues_with_repeat": 0.2, "num_mentions": 13}


def test_self_bleu_sample_is_bounded_and_deterministic() -> None:
    rows = [{"outcome": "max_turns", "turns": [T("user", f"line number {i} of many"), T("recommender", "same")]}
            for i in range(50)]
    first = corpus_metrics(rows, sample_size=10, seed=3)
    assert first["self_bleu"]["sample_size"] == {"user": 10, "recommender": 10}
    assert first == corpus_metrics(rows, sample_size=10, seed=3)
    assert first["self_bleu"]["recommender"] == pytest.approx(math.exp(3 * math.log(0.1) / 4), abs=1e-4)


# ------------------------------------------------------------------------------------------ the command


@pytest.fixture
def two_corpora(tmp_path: Path, make_config) -> tuple[Path, Path]:
    config = make_config(num_dialogues=12, dialogues_per_shard=5)
    a, b = tmp_path / "interplay", tmp_path / "baseline"
    asyncio.run(Generation(config, a).run(fake_open_engines(make_clients())))
    asyncio.run(BaselineGeneration(config, b).run(fake_open_engines(make_clients(replies=baseline_replies))))
    return a, b


def test_report_one_corpus(two_corpora, catalog_file: Path, capsys) -> None:
    a, _ = two_corpora
    assert cli_main(["report", str(a), "--catalog", str(catalog_file)]) == 0
    out = capsys.readouterr().out
    assert "Recall@1" in out and "user distinct-2" in out and "interplay" in out
    for name in ("report.md", "report.json", "lengths.png", "outcomes.png", "quality.png"):
        assert (a / "report" / name).stat().st_size > 0
    data = json.loads((a / "report" / "report.json").read_text())
    (corpus,) = data["corpora"]
    assert corpus["mode"] == "interplay" and corpus["metrics"]["num_dialogues"] == 12
    assert corpus["metrics"]["match_score"]["num_accepted_in_catalog"] >= 1


def test_report_side_by_side(two_corpora, catalog_file: Path, tmp_path: Path, capsys) -> None:
    a, b = two_corpora
    out_dir = tmp_path / "cmp"
    assert cli_main(["report", str(a), str(b), "--catalog", str(catalog_file), "--output", str(out_dir),
                     "--no-plots"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header == ["figure", "interplay", "baseline"]
    mode = next(line.split() for line in lines if line.startswith("mode"))
    assert mode[1:] == ["interplay", "single-llm"]
    data = json.loads((out_dir / "report.json").read_text())
    assert [c["mode"] for c in data["corpora"]] == ["interplay", "single-llm"]
    assert "| figure | interplay | baseline |" in (out_dir / "report.md").read_text()
    assert not list(out_dir.glob("*.png"))


def test_report_refuses_a_directory_without_a_corpus(tmp_path: Path, capsys) -> None:
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
