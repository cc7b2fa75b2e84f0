"""Duplicates: the exact shares (opening user turn, whole text) and the near-duplicate share (MinHash LSH) of
`interplay report` on a hand-made corpus with known duplicates, the sample that bounds the near-duplicate figure,
`interplay export --dedup` dropping exactly the exact duplicates, and bad input (an empty corpus, rows without
turns) answered without a traceback."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require
from interplay.cli import main
from interplay.generator.dialogue.conversation import Conversation, Outcome, Turn
from interplay.generator.inputs.seeds import Seed
from interplay.generator.output.records import RoleInfo, to_record
from interplay.generator.output.writer import CorpusWriter
from interplay.report.duplicates import NEAR_THRESHOLD, NUM_PERM, Duplicates, whole_text_key
from interplay.report.metrics import CorpusMetrics, compare, corpus_metrics
from interplay.report.render import markdown, text_table
from interplay.report.summary import HEADLINE_KEYS, headline_figures

require("datasketch")

CATALOG = Path(__file__).resolve().parent / "fixtures" / "datasets" / "redial" / "catalog.jsonl"
ROLES = {r: RoleInfo("m", None, {}) for r in ("user", "recommender")}
LONG_USER = ("I would like a gritty crime thriller from the nineties with a clever heist, a great cast and a twist "
             "ending please")
LONG_REC = "Heat from 1995 fits that well: a classic heist film with a great cast and a famous shootout"
# (outcome, [(role, text)]). Openings: s0, s1, s2 are one once normalised; s5's inner comma makes it another.
# Whole text: s0 and s1 are one. Near: s3 and s4 differ by one word (Jaccard 27/28 of their shingles), and s0/s1.
CONVERSATIONS = [
    (Outcome.ACCEPTED, [("user", "Hi, a comedy please."), ("recommender", "Try Fargo (1996), it is very funny."),
                        ("user", "Great, thanks")]),
    (Outcome.GAVE_UP, [("user", "hi,  A COMEDY please!"), ("recommender", "try fargo (1996), it is very funny"),
                       ("user", "great,   THANKS!")]),
    (Outcome.GAVE_UP, [("user", "Hi, a comedy please"), ("recommender", "How about Toy Story (1995)?"),
                       ("user", "No.")]),
    (Outcome.ACCEPTED, [("user", LONG_USER), ("recommender", LONG_REC)]),
    (Outcome.MAX_TURNS, [("user", LONG_USER + " thanks"), ("recommender", LONG_REC)]),
    (Outcome.MAX_TURNS, [("user", "Hi, a comedy, please."),
                         ("recommender", "Something different: Alien (1979) is a horror classic.")]),
    (Outcome.ERROR, []),                                            # no turn: in no denominator
    (Outcome.ERROR, [("recommender", "Hello, what would you like to watch?")]),  # no opening, a whole text
]


def T(role: str, text: str | None) -> dict:
    return {"role": role, "text": text, "item_ids": [], "num_output_tokens": 1}


def rows() -> list[dict]:
    return [{"conversation_id": f"s{i}", "outcome": o.value, "turns": [T(r, t) for r, t in turns]}
            for i, (o, turns) in enumerate(CONVERSATIONS)]


def write_corpus(out: Path, conversations: list) -> Path:
    writer = CorpusWriter(out, config={"test": True}, config_hash="0" * 16, dialogues_per_shard=3)
    for i, (outcome, turns) in enumerate(conversations):
        conv = Conversation(f"s{i}", i, Seed(f"s{i}", f"Likes {i}.", {"genres": ["Crime"]}, "m-heat"))
        for role, text in turns:
            conv.turns.append(Turn(role, text, text, 1, 1, 0, "stop", []))
        conv.finish(outcome, "boom" if outcome is Outcome.ERROR else None)
        writer.add(to_record(conv, ROLES))
    writer.close(complete=True, extra={"catalog": {"path": str(CATALOG)}})
    return out


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus", CONVERSATIONS)


def test_exact_and_near_shares_of_a_hand_made_corpus() -> None:
    d = corpus_metrics(rows())["duplicates"]
    # 6 dialogues with a user turn, 3 of them opening alike; 7 with a turn, 2 of them alike as a whole.
    assert d["openings"] == {"share": 0.5, "count": 3, "denominator": 6, "num_distinct": 4}
    assert d["whole_text"] == {"share": 0.2857, "count": 2, "denominator": 7, "num_distinct": 6}
    # 7 dialogues with a word: s0/s1 (exact) and s3/s4 (one word apart) are near duplicates; s2 (Jaccard 2/12 with
    # s0) and s5 are not.
    assert d["near_whole_text"] == {"share": 0.5714, "count": 4, "denominator": 7, "threshold": NEAR_THRESHOLD,
                                    "num_perm": NUM_PERM, "shingle_words": 3, "max_sample": 20_000}


def test_normalisation_and_keys() -> None:
    a = [T("user", "  Hi, a COMEDY please!! "), T("recommender", "Fargo")]
    assert whole_text_key(a) == whole_text_key([T("user", "hi, a comedy   please"), T("recommender", "fargo.")])
    assert whole_text_key(a) != whole_text_key([T("user", "hi a comedy please"), T("recommender", "Fargo")])
    assert whole_text_key(a) != whole_text_key([T("recommender", "Hi, a comedy please"), T("user", "Fargo")])
    assert whole_text_key(a) != whole_text_key(a + [T("user", "")])  # an empty turn is still a turn
    assert whole_text_key([]) is None


def test_no_duplicates_and_nothing_to_measure() -> None:
    distinct = corpus_metrics(rows()[5:6] + rows()[2:3])["duplicates"]
    assert [distinct[f]["share"] for f in ("openings", "whole_text", "near_whole_text")] == [0.0, 0.0, 0.0]
    # Rows without turns, or with no text at all: every denominator 0, every share None, no error.
    empty = corpus_metrics([{"conversation_id": "a", "turns": []}, {"conversation_id": "b", "turns": None},
                            {"conversation_id": "c", "turns": [T("user", None)]}])["duplicates"]
    assert empty["openings"] == {"share": 0.0, "count": 0, "denominator": 1, "num_distinct": 1}
    assert empty["whole_text"]["denominator"] == 1 and empty["near_whole_text"]["denominator"] == 0
    assert empty["near_whole_text"]["share"] is None
    assert headline_figures(corpus_metrics([]))["near_duplicate_dialogues"] is None


def test_near_sample_is_bounded_and_independent_of_order() -> None:
    many = [{"conversation_id": f"c{i}", "turns": [T("user", f"film number {i} with words {i % 7}")]}
            for i in range(40)]
    shuffled = many[:]
    random.Random(3).shuffle(shuffled)
    a = CorpusMetrics(near_sample=10)
    b = CorpusMetrics(near_sample=10)
    for row in many:
        a.add(row)
    for row in shuffled:
        b.add(row)
    assert a.duplicates.num_sampled == 10
    assert a.result()["duplicates"] == b.result()["duplicates"]
    assert a.result()["duplicates"]["near_whole_text"]["denominator"] == 10
    assert a.result()["duplicates"]["whole_text"]["denominator"] == 40  # the exact shares read every dialogue


def test_a_collapsed_corpus_is_all_duplicates() -> None:
    # 300 dialogues on one template, a few words changing: the LSH index holds one dialogue, not 300.
    collapsed = [{"conversation_id": f"c{i}", "turns": [T("user", LONG_USER), T("recommender", LONG_REC + f" {i}")]}
                 for i in range(300)]
    d = Duplicates()
    for row in collapsed:
        d.add(row["conversation_id"], row["turns"])
    result = d.result()
    assert result["openings"]["share"] == 1.0 and result["openings"]["num_distinct"] == 1
    assert result["whole_text"]["share"] == 0.0
    assert result["near_whole_text"]["share"] == 1.0


def test_corpora_compared_share_one_near_sample() -> None:
    small, large = CorpusMetrics(), CorpusMetrics()
    for row in rows()[:3]:
        small.add(row)
    for row in rows():
        large.add(row)
    results = compare([small, large])
    assert [r["duplicates"]["near_whole_text"]["denominator"] for r in results] == [3, 3]
    assert results[1]["duplicates"]["whole_text"]["denominator"] == 7  # exact shares: every dialogue


def test_headline_markdown_and_text_table() -> None:
    metrics = corpus_metrics(rows())
    figures = headline_figures(metrics)
    assert tuple(figures) == HEADLINE_KEYS
    assert (figures["duplicate_openings"], figures["duplicate_dialogues"], figures["near_duplicate_dialogues"]) \
        == (0.5, 0.2857, 0.5714)
    md = markdown([{"label": "hand", "path": "x", "mode": "interplay", "metrics": metrics}])
    assert "## Duplicates" in md
    assert "| openings duplicating another's (exact) | 0.500 (3 of 6) |" in md
    assert "| dialogues duplicating another's (exact whole text) | 0.286 (2 of 7) |" in md
    assert "| near-duplicate dialogues (MinHash LSH, Jaccard >= 0.8, 128 permutations, sample) | 0.571 (4 of 7) |" \
        in md
    assert "duplicates" in text_table([{"label": "hand", "path": "x", "mode": "interplay", "metrics": metrics}])
    old = {k: v for k, v in metrics.items() if k != "duplicates"}  # a report.json made before the figures
    assert headline_figures(old)["duplicate_openings"] is None
    assert "| openings duplicating another's (exact) | n/a |" in markdown([{"label": "old", "path": "x",
                                                                            "metrics": old}])


def test_report_command_writes_the_shares(corpus: Path, capsys) -> None:
    assert main(["report", str(corpus), "--no-plots", "--near-sample", "5"]) == 0
    assert "near-duplicate dialogues" in capsys.readouterr().out
    data = json.loads((corpus / "report" / "report.json").read_text())
    (c,) = data["corpora"]
    assert c["metrics"]["duplicates"]["openings"]["share"] == 0.5
    assert c["metrics"]["duplicates"]["whole_text"]["share"] == 0.2857
    assert c["metrics"]["duplicates"]["near_whole_text"]["denominator"] == 5
    assert c["headline"]["duplicate_openings"] == 0.5 and c["headline"]["duplicate_dialogues"] == 0.2857
    assert "## Duplicates" in (corpus / "report" / "report.md").read_text()


def test_report_on_an_empty_corpus_is_one_message(tmp_path: Path, capsys) -> None:
    empty = write_corpus(tmp_path / "empty", [])
    assert main(["report", str(empty), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "nothing to report" in err and "Traceback" not in err


def exported(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_export_dedup_drops_exactly_the_duplicates(corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "dedup.jsonl"
    assert main(["export", str(corpus), "--format", "sharegpt", "--output", str(out), "--outcome", "all",
                 "--dedup"]) == 0
    said = capsys.readouterr().out
    assert exported(out) == ["s0", "s2", "s3", "s4", "s5", "s6", "s7"]  # s1 repeats s0; the first is kept
    assert "wrote" in said and ": 7 dialogues" in said and "dropped 1 exact duplicates (whole text)" in said
    plain = tmp_path / "plain.jsonl"
    assert main(["export", str(corpus), "--format", "sharegpt", "--output", str(plain), "--outcome", "all"]) == 0
    assert len(exported(plain)) == 8 and "dropped" not in capsys.readouterr().out
    # Only the dialogues the outcome lets through are compared: s1 (gave_up) is not dropped for s0 (accepted).
    gave_up = tmp_path / "gave_up.jsonl"
    assert main(["export", str(corpus), "--format", "sharegpt", "--output", str(gave_up), "--outcome", "gave_up",
                 "--dedup"]) == 0
    assert exported(gave_up) == ["s1", "s2"] and "dropped 0 exact duplicates" in capsys.readouterr().out


def test_export_dedup_of_an_empty_corpus(tmp_path: Path, capsys) -> None:
    empty = write_corpus(tmp_path / "empty", [])
    out = tmp_path / "out.json"
    assert main(["export", str(empty), "--format", "pearl", "--output", str(out), "--dedup"]) == 0
    assert json.loads(out.read_text()) == []
    captured = capsys.readouterr()
    assert "0 dialogues" in captured.out and "dropped 0" in captured.out and "Traceback" not in captured.err


def test_export_needs_neither_nltk_nor_datasketch() -> None:
    # `interplay export --dedup` uses only the exact keys: the report extra's packages are not needed to import it.
    code = ("import sys; sys.modules['nltk'] = sys.modules['datasketch'] = None; import interplay.export as e; "
            "print(e.whole_text_key([{'role': 'user', 'text': 'hi'}]) > 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
