"""Tests for the `interplay` command line: `show`, argument handling and `python -m interplay`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from interplay.cli import main
from interplay.generator.dialogue.conversation import Conversation, Outcome, Turn
from interplay.generator.inputs.seeds import Seed
from interplay.generator.output.records import RoleInfo, to_record
from interplay.generator.output.writer import CorpusWriter, shard_files

ROLES = {"user": RoleInfo("test-model", None, {"temperature": 0.8}),
         "recommender": RoleInfo("test-model", "/adapters/rec", {"temperature": 0.7})}


def make_conversation(index: int, outcome: Outcome, turns: list[tuple[str, str, list[str]]]) -> Conversation:
    seed = Seed(f"seed-{index}", f"Summary number {index}: likes heist films.", {"genres": ["Crime"]}, "m-1")
    conv = Conversation(f"seed-{index}", index, seed)
    for role, text, items in turns:
        conv.turns.append(Turn(role, text, text + " [raw]", 20, 8, 4, "stop", items))
    conv.finish(outcome)
    if outcome is Outcome.ACCEPTED:
        conv.accepted_item_id = "m-1"
    return conv


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    out = tmp_path / "corpus"
    writer = CorpusWriter(out, config={"test": True}, config_hash="0123456789abcdef", dialogues_per_shard=2)
    writer.add(to_record(make_conversation(0, Outcome.ACCEPTED, [
        ("user", "I want a heist movie.", []),
        ("recommender", "Try Heat (1995).", ["m-1"]),
        ("user", "Heat it is!", ["m-1"]),
    ]), ROLES))
    writer.add(to_record(make_conversation(1, Outcome.GAVE_UP, [
        ("user", "Something with robots?", []),
        ("recommender", "How about Alien (1979)?", ["m-2"]),
        ("user", "Not for me, bye.", []),
    ]), ROLES))
    writer.add(to_record(make_conversation(2, Outcome.MAX_TURNS, [
        ("user", "A comedy please.", []),
        ("recommender", "Which decade?", []),
    ]), ROLES))
    writer.close(complete=True)
    return out


def test_corpus_fixture_is_a_real_corpus(corpus: Path):
    assert len(shard_files(corpus)) == 2  # two rows per shard: the show command reads across shards
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["totals"]["num_dialogues"] == 3
    assert sum(pq.read_metadata(p).num_rows for p in shard_files(corpus)) == 3


def test_show_prints_turns(corpus: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["show", str(corpus), "-n", "10"]) == 0
    out = capsys.readouterr().out
    assert "=== seed-0  outcome: accepted" in out
    assert "USER: I want a heist movie." in out
    assert "RECOMMENDER: Try Heat (1995).   -> items ['m-1']" in out
    assert "USER: Heat it is!" in out
    assert "Summary number 0: likes heist films." in out
    assert "genres: Crime" in out
    assert "[raw]" not in out  # the clean text is shown, not the raw one
    assert out.count("=== ") == 3  # all dialogues, from both shards
    assert "=== seed-2  outcome: max_turns" in out  # the second shard
    # turns come in order
    assert out.index("USER: I want a heist movie.") < out.index("RECOMMENDER: Try Heat") < out.index("Heat it is!")


def test_show_limits_number(corpus: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["show", str(corpus), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== ") == 1 and "seed-0" in out and "seed-1" not in out


def test_show_default_number(corpus: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["show", str(corpus)]) == 0
    assert capsys.readouterr().out.count("=== ") == 3


def test_show_filters_outcome(corpus: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["show", str(corpus), "--outcome", "gave_up"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== ") == 1
    assert "USER: Not for me, bye." in out and "heist movie" not in out and "comedy" not in out


def test_show_no_matching_outcome(corpus: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["show", str(corpus), "--outcome", "error"]) == 0
    assert "no dialogues with outcome 'error'" in capsys.readouterr().out


def test_show_zero(corpus: Path, capsys: pytest.CaptureFixture[str]):
    main(["show", str(corpus), "-n", "0"])
    assert "=== " not in capsys.readouterr().out


def test_show_without_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "shard-00000.parquet").write_bytes(b"")  # even with shard-like files around
    assert main(["show", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("interplay: error: ")
    assert str(tmp_path) in captured.err and "manifest.json" in captured.err
    assert captured.out == ""


def test_show_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["show", str(tmp_path / "nope")]) == 2
    assert "interplay: error: " in capsys.readouterr().err


def test_show_unreadable_manifest(corpus: Path, capsys: pytest.CaptureFixture[str]):
    (corpus / "manifest.json").write_text("{not json")
    assert main(["show", str(corpus)]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: interplay" in capsys.readouterr().err


def test_generate_requires_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--output", str(tmp_path)])
    assert info.value.code == 2 and "--config" in capsys.readouterr().err


def test_python_m_interplay_help():
    result = subprocess.run([sys.executable, "-m", "interplay", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: interplay" in result.stdout
    for command in ("generate", "show", "prepare"):
        assert command in result.stdout


def test_python_m_interplay_show_without_manifest(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "interplay", "show", str(tmp_path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "interplay: error:" in result.stderr and "Traceback" not in result.stderr


def test_a_zero_shot_run_of_the_embedded_model_says_so(tmp_path: Path, model_dir: Path, monkeypatch) -> None:
    """`make generate` on the untrained embedded model names the command that gives trained dialogues; a run of
    another model, one with an adapter, or the teacher, is not called a smoke run."""
    from interplay.generate import zero_shot_note
    from interplay.generator.config import load_config

    monkeypatch.setattr("interplay.prepare.default_model_dir", lambda: model_dir)
    assert "make reproduce" in zero_shot_note(load_config(None, {"engine.model": str(model_dir)}))
    assert zero_shot_note(load_config(None, {"engine.model": str(model_dir), "protocol": "reference"})) is None
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    assert zero_shot_note(load_config(None, {"engine.model": str(other)})) is None
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    assert zero_shot_note(load_config(None, {"engine.model": str(model_dir), "user.adapter": str(adapter)})) is None
