"""`interplay report`: every task figure on a hand-built corpus against values worked out by hand, the headline
dict, and the command on fake-engine corpora (one, an Interplay corpus beside a baseline one, and a newer corpus
with `protocol` and `candidate_item_ids`). Text figures: test_report_text.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_baseline import replies as baseline_replies

from fake_engine import fake_open_engines, make_clients
from interplay.cli import main as cli_main
from interplay.generator.runtime.baseline import BaselineGeneration
from interplay.generator.runtime.run import Generation
from interplay.report.cli import analyse
from interplay.report.metrics import corpus_metrics
from interplay.report.render import candidates_note, protocol
from interplay.report.summary import HEADLINE_KEYS, headline
from interplay.report.task import ChanceIndex, attribute_match, final_list, leakage


def T(role: str, text: str, item_ids: list[str] = (), tokens: int = 5, **extra) -> dict:
    return {"role": role, "text": text, "item_ids": list(item_ids), "num_output_tokens": tokens, **extra}


def attrs(**kw: list[str]) -> list[dict]:
    return [{"name": k, "values": v} for k, v in kw.items()]


ITEMS = {
    "m1": ("Heat (1995)", {"genres": ["Crime", "Thriller"], "decade": ["1990s"]}),
    "m2": ("Toy Story (1995)", {"genres": ["Animation", "Comedy"], "decade": ["1990s"]}),
    "m3": ("Fargo (1996)", {"genres": ["Crime", "Comedy"], "decade": ["1990s"]}),
    "m5": ("Alien (1979)", {"genres": ["Horror", "Sci-Fi"], "decade": ["1970s"]}),
    "m6": ("Pulp Fiction (1994)", {"genres": ["Crime"], "decade": ["1990s"]}),
    "m9": ("Big Lebowski, The (1998)", {"genres": ["Comedy"], "decade": ["1990s"]}),
}

ROWS = [
    # The user repeats a suggested title (not leakage); the last list puts the target second.
    {"outcome": "accepted", "target_item_id": "m1", "accepted_item_id": "m5",
     "recommended_item_ids": ["m1", "m3", "m5"], "target_attributes": attrs(genres=["Sci-Fi", "Comedy"],
                                                                           decade=["1990s"]),
     "turns": [T("user", "I want a fun film"), T("recommender", "Try Heat (1995) or Fargo (1996)", ["m1", "m3"]),
               T("user", "not Heat, something else", ["m1"]),
               T("recommender", "Then Alien (1979) or Heat (1995) again", ["m5", "m1"]),
               T("user", "ok Alien", ["m5"])]},
    # The user names the target before any recommendation: leakage. Target sixth in the only list.
    {"outcome": "max_turns", "target_item_id": "m6", "accepted_item_id": None,
     "recommended_item_ids": ["m2", "x1", "x2", "x3", "x4", "m6"], "target_attributes": attrs(genres=["Crime"]),
     "turns": [T("user", "I want Pulp Fiction", ["m6"]),
               T("recommender", "Try Toy Story (1995)", ["m2", "x1", "x2", "x3", "x4", "m6"])]},
    # No target; a recommender turn that names nothing (not grounded).
    {"outcome": "gave_up", "target_item_id": None, "accepted_item_id": None, "recommended_item_ids": [],
     "target_attributes": attrs(genres=["Drama"]),
     "turns": [T("user", "hi"), T("recommender", "hello, what do you like?"), T("user", "bye")]},
    # Leakage found in the text alone (lower case, not grounded), by the shared title rule.
    {"outcome": "accepted", "target_item_id": "m9", "accepted_item_id": "m2", "recommended_item_ids": ["m2"],
     "target_attributes": attrs(genres=["comedy"], decade=["1990s"]),
     "turns": [T("user", "maybe the big lebowski tonight"), T("recommender", "Toy Story (1995)!", ["m2"]),
               T("user", "fine")]},
    {"outcome": "accepted", "target_item_id": "m3", "accepted_item_id": "m3", "recommended_item_ids": ["m3"],
     "target_attributes": attrs(genres=["Crime", "Animation"]),
     "turns": [T("user", "anything"), T("recommender", "Try Fargo (1996)", ["m3"]), T("user", "great")]},
]


@pytest.fixture(scope="module")
def metrics() -> dict:
    return corpus_metrics(ROWS, items=ITEMS)


def test_turns_and_success(metrics: dict) -> None:
    assert metrics["num_dialogues"] == 5
    assert metrics["turns"] == {"mean": 3.2, "median": 3, "p90": 5, "max": 5}
    assert metrics["turns_to_accept"] == {"mean": 3.667, "median": 3, "p90": 5, "max": 5, "num_accepted": 3}
    assert metrics["outcomes"]["accepted"] == {"count": 3, "share": 0.6}
    assert metrics["success_rate"] == 0.6
    # 25 user words, 23 different; 15 user bigrams, "i want" twice; 10 trigrams, all different.
    assert metrics["distinct"]["user"] == {"1": 0.92, "2": round(14 / 15, 4), "3": 1.0}
    assert metrics["utterance_words"]["user"] == {"mean": 2.5, "median": 1.5, "p90": 5, "max": 5}


def test_recall_three_ways(metrics: dict) -> None:
    # Last list per dialogue with a target: [m5, m1] (rank 2), [m2..m6] (rank 6), [m2] (miss), [m3] (rank 1).
    assert metrics["recall"] == {"@1": 0.25, "@5": 0.5, "@10": 0.75, "num_with_target": 4}
    # Every list: ranks 1, 2 | 6 | miss | 1 over 5 listing turns.
    assert metrics["recall_per_turn"] == {"@1": 0.4, "@5": 0.6, "@10": 0.8, "num_turns": 5}
    # The old figure, order of first mention over the dialogue: ranks 1, 6, miss, 1.
    assert metrics["dialogue_recall"] == {"@1": 0.5, "@5": 0.5, "@10": 0.75, "num_with_target": 4}
    assert final_list(ROWS[0]["turns"]) == ["m5", "m1"] and final_list(ROWS[2]["turns"]) == []


def test_grounded_turn_share(metrics: dict) -> None:
    assert metrics["grounded_turn_share"] == round(5 / 6, 4) and metrics["num_recommender_turns"] == 6


def test_match_score_and_chance(metrics: dict) -> None:
    # Alien for (Sci-Fi or Comedy, 1990s): genre yes, decade no; Toy Story for (comedy, 1990s): both, any case;
    # Fargo for (Crime or Animation): yes. Chance: 3 of 6 items for the first two, 4 of 6 (m1, m2, m3, m6) for
    # the third; over all five dialogues also 3/6 (Crime) and 0/6 (Drama).
    assert attribute_match(ITEMS["m5"][1], {"genres": ["Sci-Fi", "Comedy"], "decade": ["1990s"]}) == (False, 0.5)
    # The Wilson interval of 2 of 3: tests/test_report_decisions.py checks the formula.
    assert metrics["match_score"] == {"all_attributes": round(2 / 3, 4), "all_attributes_ci95": [0.2077, 0.9385],
                                      "mean_attribute_share": round(2.5 / 3, 4),
                                      "chance_match": round((0.5 + 0.5 + 4 / 6) / 3, 4), "num_scored": 3,
                                      "chance_match_all_dialogues": round((0.5 + 0.5 + 0 + 0.5 + 4 / 6) / 5, 4)}
    assert corpus_metrics(ROWS)["match_score"] is None  # no catalog, no match score


def test_chance_index() -> None:
    chance = ChanceIndex(ITEMS)
    assert chance.share({"genres": ["comedy"]}) == 0.5                # m2, m3, m9
    assert chance.share({"genres": ["Crime"], "decade": ["1970s"]}) == 0.0
    assert chance.share({"genres": ["Horror", "Animation"]}) == pytest.approx(2 / 6)
    assert chance.share({"genres": []}) is None and chance.share({"mood": ["dark"]}) == 0.0


def test_leakage(metrics: dict) -> None:
    # Heat named by the user after the recommender named it: not leakage. Pulp Fiction before any recommendation,
    # and "the big lebowski" in lower case (found in the text): leakage. Fargo never named by the user.
    assert metrics["leakage"] == {"before_recommender": 0.5, "user_names_target": 0.75, "num_with_target": 4}
    title = "Pulp Fiction (1994)"
    # The recommender's mention counts in its text too, grounded or not; a one-word title only when grounded.
    assert leakage([T("recommender", "maybe pulp fiction?"), T("user", "Pulp Fiction (1994) yes")], "m6",
                   title) == (False, True)
    assert leakage([T("user", "I could watch pulp fiction"), T("recommender", "Pulp Fiction!", ["m6"])], "m6",
                   title) == (True, True)
    assert leakage([T("user", "the heat is on")], "m1", "Heat (1995)") == (False, False)
    assert leakage([T("user", "Heat (1995)", ["m1"])], "m1", "Heat (1995)") == (True, True)


def test_repeated_recommendations(metrics: dict) -> None:
    # 12 item mentions in recommender turns, one of them (Heat, again) a repeat, in one dialogue of five.
    assert metrics["repeated_recommendations"] == {"share_of_mentions": round(1 / 12, 4),
                                                   "dialogues_with_repeat": 0.2, "num_mentions": 12}


def test_protocol_and_candidates() -> None:
    old = corpus_metrics(ROWS, items=ITEMS)
    assert old["protocol"] == {"unrecorded": 5} and protocol(old) == "unrecorded"
    assert old["candidates"]["num_turns_with_candidates"] == 0 and candidates_note(old) == "no"
    rows = [{**row, "protocol": "reference",
             "turns": [{**t, "candidate_item_ids": ["m3", "m6", "m1"] if t["role"] == "recommender" else []}
                       for t in row["turns"]]} for row in ROWS[:2]]
    new = corpus_metrics(rows + [{**ROWS[4], "protocol": "reference_free"}], items=ITEMS)
    assert new["protocol"] == {"reference": 2, "reference_free": 1}
    assert protocol(new) == "mixed: reference 2, reference_free 1"
    # 3 lists of 3 in 2 of 3 dialogues; the target (m1, m6; not m3, no list there) among them in 2 of 3.
    assert new["candidates"] == {"dialogues_with_candidates": 0.6667, "num_turns_with_candidates": 3,
                                 "mean_per_list": 3.0, "target_in_candidates": 0.6667}
    assert candidates_note(new) == "yes: 67% of dialogues, 3 per list, target among them in 67%"


def test_headline_is_the_flat_dict_experiments_print(metrics: dict) -> None:
    figures = headline({"corpora": [{"label": "hand", "metrics": metrics}]})
    assert list(figures) == ["hand"] and tuple(figures["hand"]) == HEADLINE_KEYS
    # Acceptances m5 (does not fit), m2, m3 (fit); the only offers (one-item turns) are m2 and m3, both fitting,
    # both accepted.
    assert figures["hand"] == {"success_rate": 0.6, "success_rate_ci95": [0.2307, 0.8824], "match_score": 0.6667,
                               "match_score_ci95": [0.2077, 0.9385], "chance_match": 0.5556,
                               "recall_at_1": 0.25, "recall_at_10": 0.75, "leakage": 0.5,
                               "distinct_2_user": 0.9333, "distinct_2_recommender": metrics["distinct"]
                               ["recommender"]["2"], "mean_turns": 3.2, "grounded_turn_share": 0.8333,
                               "decision_precision": 0.6667, "decision_recall": 1.0, "offers_that_fit": 1.0,
                               "duplicate_openings": 0.0, "duplicate_dialogues": 0.0,
                               "near_duplicate_dialogues": 0.0}
    nothing = headline({"corpora": [{"label": "x", "metrics": corpus_metrics(ROWS[2:3])}]})["x"]
    assert nothing["match_score"] is None and nothing["recall_at_1"] is None and nothing["leakage"] is None
    assert nothing["match_score_ci95"] is None and nothing["decision_precision"] is None


# ------------------------------------------------------------------------------------------ the command


@pytest.fixture
def two_corpora(tmp_path: Path, make_config) -> tuple[Path, Path]:
    # The fake engine picks replies by the turn seeds: these dialogues are the ones the assertions below expect
    # (some end before any recommender turn).
    config = make_config(num_dialogues=12, dialogues_per_shard=5, sampling_seeds="per_turn")
    a, b = tmp_path / "interplay", tmp_path / "baseline"
    asyncio.run(Generation(config, a).run(fake_open_engines(make_clients())))
    asyncio.run(BaselineGeneration(config, b).run(fake_open_engines(make_clients(replies=baseline_replies))))
    return a, b


def test_report_one_corpus(two_corpora, catalog_file: Path, capsys) -> None:
    a, _ = two_corpora
    assert cli_main(["report", str(a), "--catalog", str(catalog_file)]) == 0
    out = capsys.readouterr().out
    assert "Recall@1 (last list)" in out and "user distinct-2" in out and "interplay" in out
    assert "protocol" in out and "reference_free" in out
    for name in ("report.md", "report.json", "success_match.png", "lengths.png", "outcomes.png", "quality.png"):
        assert (a / "report" / name).stat().st_size > 0
    data = json.loads((a / "report" / "report.json").read_text())
    (corpus,) = data["corpora"]
    assert corpus["mode"] == "interplay" and corpus["metrics"]["num_dialogues"] == 12
    assert corpus["metrics"]["match_score"]["num_scored"] >= 1
    assert tuple(corpus["headline"]) == HEADLINE_KEYS
    assert headline(data)[corpus["label"]] == corpus["headline"]
    assert set(corpus["metrics"]["decisions"]) >= {"decision_precision", "num_offers"}
    assert corpus["metrics"]["teacher_quality"]["one_item_turns"]["denominator"] > 0
    report_md = (a / "report" / "report.md").read_text()
    assert "## Decisions" in report_md and "## Teacher quality" in report_md


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
    # distinct-n and self-BLEU on as many utterances per role in both corpora: the smaller corpus's count.
    sizes = [c["metrics"]["distinct"]["num_utterances"] for c in data["corpora"]]
    alone = [analyse([d], catalog=str(catalog_file))[0]["metrics"]["distinct"]["num_utterances"] for d in (a, b)]
    assert sizes[0] == sizes[1] == {r: min(n[r] for n in alone) for r in ("user", "recommender")}
    assert alone[0] != alone[1]  # the fixture's corpora differ in size, so the test means something


def test_report_refuses_a_directory_without_a_corpus(tmp_path: Path, capsys) -> None:
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_report_reads_protocol_and_candidates_when_present(two_corpora, catalog_file: Path, tmp_path: Path,
                                                           capsys) -> None:
    """A newer corpus (a `protocol` column, `candidate_item_ids` in the turns) beside an older one without."""
    a, _ = two_corpora
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "manifest.json").write_text((a / "manifest.json").read_text())
    older = tmp_path / "older"  # as written before the two columns existed
    older.mkdir()
    (older / "manifest.json").write_text((a / "manifest.json").read_text())
    rows = [r for shard in sorted(a.glob("shard-*.parquet")) for r in pq.read_table(shard).to_pylist()]
    old_rows = [{k: v for k, v in r.items() if k != "protocol"} for r in rows]
    for row in old_rows:
        row["turns"] = [{k: v for k, v in t.items() if k != "candidate_item_ids"} for t in row["turns"]]
    pq.write_table(pa.Table.from_pylist(old_rows), older / "shard-00000.parquet")
    for row in rows:
        row["protocol"] = "reference"
        for turn in row["turns"]:
            turn["candidate_item_ids"] = [row["target_item_id"]] if turn["role"] == "recommender" else []
    pq.write_table(pa.Table.from_pylist(rows), newer / "shard-00000.parquet")
    assert cli_main(["report", str(newer), str(older), "--catalog", str(catalog_file), "--no-plots",
                     "--output", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if line.startswith("protocol")).split()[1:] == [
        "reference", "unrecorded"]
    data = json.loads((tmp_path / "cmp" / "report.json").read_text())
    with_target = [r for r in rows if r["target_item_id"] is not None]
    shown = sum(any(t["role"] == "recommender" for t in r["turns"]) for r in with_target)
    assert 0 < shown < len(with_target)  # some dialogues end before any recommender turn
    assert data["corpora"][0]["metrics"]["candidates"]["target_in_candidates"] == round(shown / len(with_target), 4)
    assert data["corpora"][1]["metrics"]["candidates"]["num_turns_with_candidates"] == 0
    assert "the recommender saw catalog candidates" in (tmp_path / "cmp" / "report.md").read_text()
    # The same dialogues: every figure but the protocol and candidates is the older corpus's.
    same = {k for k, v in data["corpora"][0]["metrics"].items() if v == data["corpora"][1]["metrics"][k]}
    assert set(data["corpora"][0]["metrics"]) - same == {"protocol", "candidates"}


def test_report_refuses_bad_sample_sizes(two_corpora, capsys) -> None:
    a, _ = two_corpora
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["report", str(a), "--distinct-sample", "0"])
    assert exit_info.value.code == 2 and "--distinct-sample" in capsys.readouterr().err
