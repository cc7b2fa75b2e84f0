"""Tests for `interplay export`: each format written from a small corpus, said once what it cannot hold, and read
back through the loader `interplay train --data` uses (a round trip per format)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interplay.cli import main
from interplay.generator.dialogue.conversation import Conversation, Outcome, Turn
from interplay.generator.inputs.catalog import Catalog
from interplay.generator.inputs.seeds import Seed
from interplay.generator.output.records import RoleInfo, to_record
from interplay.generator.output.writer import CorpusWriter
from interplay.training.data import load_training_data
from interplay.training.formats.to_redial import place_mentions

CATALOG = Path(__file__).resolve().parent / "fixtures" / "datasets" / "redial" / "catalog.jsonl"
ROLES = {r: RoleInfo("m", None, {}) for r in ("user", "recommender")}
# (outcome, accepted item, [(role, text, grounded ids)])
CONVERSATIONS = [
    (Outcome.ACCEPTED, "m-heat", [("user", "A heist movie, please.", []),
                                  ("recommender", "Try Heat (1995), a classic.", ["m-heat"]),
                                  ("user", "Heat it is!", [])]),
    (Outcome.GAVE_UP, None, [("user", "A comedy?", []),
                             ("recommender", "Police Academy (1984) or super troopers?", ["m-pa", "m-st"]),
                             ("user", "No thanks, bye.", [])]),
    (Outcome.MAX_TURNS, None, [("user", "Something light.", []), ("recommender", "What mood?", [])]),
    (Outcome.ERROR, None, [("user", "Hi", [])]),
    (Outcome.ACCEPTED, "m-pa", [("user", "I loved Heat (1995). A comedy now?", []),
                                ("recommender", "Police Academy (1984)!", ["m-pa"]), ("user", "", [])]),
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    out = tmp_path / "corpus"
    writer = CorpusWriter(out, config={"test": True}, config_hash="0" * 16, dialogues_per_shard=2)
    for i, (outcome, accepted, turns) in enumerate(CONVERSATIONS):
        seed = Seed(f"s{i}", f"Loves heists {i}.", {"genres": ["Crime"], "decade": ["1990s"]}, "m-heat")
        conv = Conversation(f"s{i}", i, seed)
        for role, text, ids in turns:
            conv.turns.append(Turn(role, text, text, 1, 1, 0, "stop", ids))
        conv.finish(outcome, "boom" if outcome is Outcome.ERROR else None)
        conv.accepted_item_id = accepted
        writer.add(to_record(conv, ROLES))
    writer.close(complete=True, extra={"catalog": {"path": str(CATALOG)}})
    return out


def export(corpus: Path, fmt: str, tmp_path: Path, capsys, *extra: str) -> tuple[Path, str]:
    out = tmp_path / f"export.{fmt}"
    assert main(["export", str(corpus), "--format", fmt, "--output", str(out), *extra]) == 0
    return out, capsys.readouterr().err


def read_back(path: Path):
    dialogues, stats = load_training_data([str(path)], fmt="auto", outcomes=None, min_turns=1, max_dialogues=None)
    return dialogues, stats


def test_redial_export_is_redials_own_structure_and_reads_back(corpus: Path, tmp_path: Path, capsys):
    out, err = export(corpus, "redial", tmp_path, capsys)
    assert err.count("ReDial has no place for") == 1  # said once, not per dialogue
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4  # the error conversation is left out by default
    first = records[0]
    assert set(first) == {"movieMentions", "respondentQuestions", "messages", "conversationId",
                          "respondentWorkerId", "initiatorWorkerId", "initiatorQuestions"}
    assert set(first["messages"][0]) == {"timeOffset", "text", "senderWorkerId", "messageId"}
    assert first["messages"][1]["text"] == "Try @m-heat, a classic."
    assert first["movieMentions"] == {"m-heat": "Heat (1995)"}
    assert first["initiatorQuestions"] == {"m-heat": {"suggested": 1, "seen": 2, "liked": 1}}
    gave_up = records[1]
    assert gave_up["messages"][1]["text"] == "@m-pa or @m-st?"  # the title found however it was cased
    assert {q["liked"] for q in gave_up["initiatorQuestions"].values()} == {2}
    last = records[3]  # the user's own mention becomes @id too, and is not "suggested"
    assert last["messages"][0]["text"] == "I loved @m-heat. A comedy now?"
    assert last["initiatorQuestions"]["m-heat"]["suggested"] == 0
    dialogues, stats = read_back(out)
    assert [d.ending for d in dialogues] == ["accept", None, None, "accept"]  # gave_up cannot be said
    assert dialogues[0].turns == (("user", "A heist movie, please."), ("recommender", "Try Heat (1995), a classic."),
                                  ("user", "Heat it is!"))
    assert dialogues[0].target_item == "Heat (1995)"
    assert dialogues[1].turns[1] == ("recommender", "Police Academy (1984) or Super Troopers (2001)?")
    assert dialogues[3].turns[-1] == ("user", "")  # the accept marker alone
    assert stats.as_dict()["endings"] == {"accepted": 2, "gave_up": 0, "unknown": 2}


def test_sharegpt_export_round_trips_everything_it_holds(corpus: Path, tmp_path: Path, capsys):
    out, err = export(corpus, "sharegpt", tmp_path, capsys, "--outcome", "all")
    assert err.count("ShareGPT keeps no") == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5
    assert records[0]["conversations"][:2] == [{"from": "human", "value": "A heist movie, please."},
                                               {"from": "gpt", "value": "Try Heat (1995), a classic."}]
    dialogues, stats = read_back(out)
    assert [d.ending for d in dialogues[:3]] == ["accept", "quit", None]
    assert dialogues[0].preference_summary == "Loves heists 0."
    assert dialogues[0].target_attributes == {"genres": ["Crime"], "decade": ["1990s"]}
    assert dialogues[0].turns[1] == ("recommender", "Try Heat (1995), a classic.")


def test_pearl_export_is_pearls_structure_and_reads_back(corpus: Path, tmp_path: Path, capsys):
    out, err = export(corpus, "pearl", tmp_path, capsys)
    assert err.count("PEARL has reviews where") == 1
    records = json.loads(out.read_text())  # one JSON array, as PEARL's files
    first = records[0]
    for key in ("data_id", "user_persona", "seen_movie_titles", "gt_abstract", "gt_movie_title", "gt_genre",
                "gt_director", "gt_cast", "dialogue"):
        assert key in first
    assert first["gt_movie_title"] == "Heat (1995)" and first["gt_genre"] == "Crime"
    assert first["gt_abstract"].startswith("Title: Heat (1995)\nGenre: Crime\nDirector: ")
    assert first["dialogue"][1] == "Recommender: Try Heat (1995), a classic."
    dialogues, _ = read_back(out)
    assert [d.ending for d in dialogues] == ["accept", "quit", None, "accept"]  # the outcome field wins
    assert dialogues[1].preference_summary == "Loves heists 1."
    assert dialogues[1].target_attributes == {"genres": ["Crime"], "decade": ["1990s"]}
    assert dialogues[3].turns[-1] == ("user", "")


def test_export_refuses_an_existing_file_and_a_non_corpus(corpus: Path, tmp_path: Path, capsys):
    out, _ = export(corpus, "sharegpt", tmp_path, capsys)
    assert main(["export", str(corpus), "--format", "sharegpt", "--output", str(out)]) == 2
    assert main(["export", str(tmp_path), "--format", "redial", "--output", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "not an interplay output directory" in err


def test_place_mentions_matches_titles_loosely_but_whole_words():
    catalog = Catalog.load(CATALOG)
    heat, pa = catalog.get("m-heat"), catalog.get("m-pa")
    assert place_mentions("heat (1995) and POLICE ACADEMY!", [heat, pa]) == ("@m-heat and @m-pa!", ["m-pa", "m-heat"])
    assert place_mentions("the heatwave", [heat]) == ("the heatwave", [])
