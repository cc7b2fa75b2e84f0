"""Tests for interplay.training.data: the three corpus formats, the filter, and skipping with reasons.

The fixtures (tests/fixtures/training/) carry one bad record per reason next to good ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interplay.cli import main
from interplay.generator.dialogue.conversation import Conversation, Outcome, Turn
from interplay.generator.inputs.seeds import Seed
from interplay.generator.output.records import RoleInfo, to_record
from interplay.generator.output.writer import CorpusWriter
from interplay.training.data import detect_format, load_dialogues
from interplay.training.errors import TrainingInputError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "training"
JSONL, PEARL = FIXTURES / "dialogues.jsonl", FIXTURES / "pearl_train.json"
ROLES = {r: RoleInfo("m", None, {}) for r in ("user", "recommender")}


def write_corpus(out: Path, conversations: list[tuple[Outcome, list[tuple[str, str]]]]) -> Path:
    writer = CorpusWriter(out, config={"test": True}, config_hash="0" * 16, dialogues_per_shard=2)
    for i, (outcome, turns) in enumerate(conversations):
        seed = Seed(f"s{i}", f"Summary {i}: likes heists.", {"genres": ["Crime"]}, f"m{i}")
        conv = Conversation(f"s{i}", i, seed)
        for role, text in turns:
            conv.turns.append(Turn(role, text, text, 1, 1, 0, "stop", []))
        conv.finish(outcome, "boom" if outcome is Outcome.ERROR else None)
        writer.add(to_record(conv, ROLES))
    writer.close(complete=True)
    return out


def test_jsonl_messages_format_counts_every_bad_record_by_reason():
    dialogues, stats = load_dialogues([JSONL])
    assert stats.num_records == 15
    assert dict(stats.skipped) == {"invalid JSON": 1, "missing messages": 1, "empty dialogue": 1,
                                   "unknown speaker 'narrator'": 1, "non-alternating dialogue": 1, "empty turn": 1}
    assert [d.dialogue_id for d in dialogues] == [f"d0{i}" for i in range(1, 9)] + ["no-summary"]
    d1 = dialogues[0]
    assert d1.turns[0] == ("user", "I'd like a tense crime movie tonight.")
    assert d1.turns[1][0] == "recommender"
    assert d1.preference_summary.startswith("Loves: Heat (1995)")
    assert d1.target_attributes == {"genres": ["Crime", "Thriller"], "decade": ["1990s"]}
    assert d1.ending == "accept" and dialogues[2].ending == "quit" and dialogues[3].ending is None
    # an accepted dialogue whose last user turn was only the marker keeps that turn (empty text)
    assert dialogues[1].turns[-1] == ("user", "") and dialogues[1].ending == "accept"
    # the system message of another tool is dropped, the rest kept; no summary is fine for loading
    no_summary = dialogues[-1]
    assert no_summary.turns == (("user", "A western?"), ("recommender", "Unforgiven (1992)."))
    assert no_summary.preference_summary is None and no_summary.target_attributes is None


def test_pearl_format():
    dialogues, stats = load_dialogues([PEARL], keep_persona=True)
    assert stats.num_records == 8
    assert dict(stats.skipped) == {"unknown speaker 'Narrator'": 1, "non-alternating dialogue": 1,
                                   "empty dialogue": 1, "missing dialogue": 1, "turn without a speaker label": 1,
                                   "record is not an object": 1}
    assert dict(stats.repaired) == {"dropped the recommender's opening turn": 1}
    first, second = dialogues
    assert first.dialogue_id == "0" and first.target_item == "Prisoners"
    assert [s for s, _ in first.turns] == ["user", "recommender", "user", "recommender", "user"]
    assert first.turns[2] == ("user", "Something dark and suspenseful, like a detective story.")
    assert "Zodiac" in first.persona and first.preference_summary is None
    # the opening recommender greeting is dropped: the generator's protocol has the user first
    assert second.turns[0] == ("user", "An animated fantasy with a beautiful world.")
    assert second.target_item == "Princess Mononoke"  # from gt_abstract.title
    assert second.persona == "Spirited Away is pure wonder.\n\nCars felt like an advertisement."


def test_persona_is_dropped_unless_asked_for():
    dialogues, _ = load_dialogues([PEARL])
    assert all(d.persona is None for d in dialogues)


def test_pearl_jsonl_and_id_mapping(tmp_path: Path):
    records = json.loads(PEARL.read_text())[:2]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_bytes("".join(json.dumps(r) + "\n" for r in records).encode() + b'\n{"dialogue": "\xff"}\n')
    dialogues, stats = load_dialogues([jsonl])
    assert len(dialogues) == 2 and stats.skipped == {"invalid UTF-8": 1}
    mapping = tmp_path / "by_id.json"
    mapping.write_text(json.dumps({"a": records[0], "b": records[1]}))
    assert [d.dialogue_id for d in load_dialogues([mapping])[0]] == ["0", "1"]  # data_id wins over the key


def test_interplay_corpus_with_outcome_filter_and_min_turns(tmp_path: Path):
    turns3 = [("user", "A heist movie?"), ("recommender", "Heat (1995)."), ("user", "Yes!")]
    out = write_corpus(tmp_path / "corpus", [
        (Outcome.ACCEPTED, turns3),
        (Outcome.GAVE_UP, turns3),
        (Outcome.MAX_TURNS, turns3[:2]),
        (Outcome.ERROR, turns3[:1]),
        (Outcome.ACCEPTED, [("user", "Hi")]),
    ])
    assert detect_format(out) == "corpus"
    dialogues, stats = load_dialogues([out], outcomes=["accepted", "gave_up", "max_turns"], min_turns=2)
    assert [d.dialogue_id for d in dialogues] == ["s0", "s1", "s2"]
    assert dict(stats.filtered) == {"outcome error": 1, "fewer than 2 turns": 1}
    assert [d.ending for d in dialogues] == ["accept", "quit", None]
    assert dialogues[0].preference_summary == "Summary 0: likes heists."
    assert dialogues[0].target_attributes == {"genres": ["Crime"]} and dialogues[0].target_item == "m0"
    only_accepted, stats = load_dialogues([out], outcomes=["accepted"], min_turns=1)
    assert [d.dialogue_id for d in only_accepted] == ["s0", "s4"]
    # one shard file works too
    assert len(load_dialogues([next(out.glob("shard-*.parquet"))], outcomes=None)[0]) == 2


def test_detect_format(tmp_path: Path):
    assert detect_format(JSONL) == "messages"
    assert detect_format(PEARL) == "pearl"
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "hello"}\n')
    with pytest.raises(TrainingInputError, match="pass --format"):
        detect_format(other)


def test_missing_file_is_one_error(tmp_path: Path):
    with pytest.raises(TrainingInputError, match="does not exist"):
        load_dialogues([tmp_path / "nope.json"])


def test_no_usable_examples_is_one_clear_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n{"messages": [{"role": "user", "content": "Hi"}, '
                   '{"role": "user", "content": "Hi?"}]}\nnot json\n')
    code = main(["train", "--role", "recommender", "--data", str(bad), "--format", "messages",
                 "--output", str(tmp_path / "adapter"), "--show-example", "--base-model",
                 str(FIXTURES)])  # never loaded: the data fails first
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("interplay: error: ") and err.count("\n") == 1
    assert "empty dialogue: 1" in err and "non-alternating dialogue: 1" in err and "invalid JSON: 1" in err
