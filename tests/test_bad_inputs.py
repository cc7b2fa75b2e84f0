"""Bad seeds, catalogs, configs and output directories, through the real command line (`interplay generate`).

Each case ends one of two ways, never with a traceback and never with a conversation silently missing:
  - the whole input is unusable: one `interplay: error: ...` line naming the problem, exit status 2, nothing
    written to the output directory;
  - some rows are unusable: they are skipped and counted by reason in manifest.json (`seeds.skipped`,
    `catalog.skipped`), and the corpus still holds every requested conversation.
The engines are the fake one (tests/fake_engine.py) put in place of vLLM's; everything else is the real path.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import CATALOG_ROWS, make_seeds, require
from fake_engine import EngineLog, fake_open_engines, make_clients
from interplay.cli import main
from interplay.generator.runtime import engine
from interplay.generator.runtime.identity import file_digest

require("vllm")  # check_config, on the command line's path, reads vLLM's argument classes

NUM = 12  # more conversations than the good seeds: seeds are reused, never short


def good_seed_rows(n: int = 6) -> list[dict[str, Any]]:
    return [{"seed_id": s.seed_id, "preference_summary": s.preference_summary,
             "target_attributes": s.target_attributes, "target_item_id": s.target_item_id} for s in make_seeds(n)]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """dicts become JSON lines; bytes are written as they are (to hold invalid UTF-8 or broken JSON)."""
    path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows))
    return path


def invalid_utf8_strings(values: list[bytes]) -> pa.Array:
    """A Parquet string column holding the given bytes: pyarrow's own constructors would refuse invalid UTF-8."""
    offsets = [0]
    for v in values:
        offsets.append(offsets[-1] + len(v))
    return pa.Array.from_buffers(pa.string(), len(values),
                                 [None, pa.array(offsets, pa.int32()).buffers()[1], pa.py_buffer(b"".join(values))])


class Result:
    def __init__(self, code: int, stdout: str, stderr: str, out: Path):
        self.code, self.stdout, self.stderr, self.out = code, stdout, stderr, out

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.out / "manifest.json").read_text())

    def rows(self) -> list[dict[str, Any]]:
        return [r for p in sorted(self.out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]

    def error(self) -> str:
        """The one error message of a refused run (config errors list each field on a line of its own); also checks
        that the refusal showed no traceback."""
        assert self.code == 2, self.stdout + self.stderr
        assert "Traceback" not in self.stderr + self.stdout
        lines = self.stderr.splitlines()
        [start] = [i for i, x in enumerate(lines) if x.startswith("interplay: error:")]
        return "\n".join(lines[start:])


@pytest.fixture
def generate(tmp_path: Path, model_dir: Path, catalog_file: Path, seeds_file: Path,
             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """generate(seeds=..., catalog=..., config={...}, args=[...], out=...) runs `interplay generate` on the fake
    engine and returns its exit status, output and output directory."""
    monkeypatch.setattr(engine, "open_engines", fake_open_engines(make_clients()))

    def run(*, seeds: Path | None = None, catalog: Path | None = None, config: dict[str, Any] | None = None,
            args: tuple[str, ...] = (), out: Path | None = None) -> Result:
        data = {"engine": {"model": str(model_dir)},
                "seeds": {"source": "file", "path": str(seeds or seeds_file), "catalog": str(catalog or catalog_file)},
                "conversation": {"max_turns": 4}, "num_dialogues": NUM, "max_in_flight": 4,
                "dialogues_per_shard": 5}
        for key, value in (config or {}).items():
            data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(data))
        out = out or tmp_path / "out"
        code = main(["generate", "--config", str(config_path), "--output", str(out), *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err, out)
    return run


def check_complete(result: Result, num: int = NUM) -> list[dict[str, Any]]:
    """The run went through: every requested conversation exactly once, and no skipped seed in it."""
    assert result.code == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    rows = result.rows()
    assert sorted(r["conversation_index"] for r in rows) == list(range(num))
    seeds = result.manifest["seeds"]
    assert seeds["num_rows"] == seeds["num_valid"] + sum(seeds["skipped"].values())
    return rows


# ---------------------------------------------------------------------------------------- bad seed rows

GOOD = good_seed_rows()
ATTRS = {"genres": ["Crime"]}

# One bad row among good ones: (the row, the skip reason the manifest must count).
BAD_SEED_ROWS = {
    "missing column": ({"seed_id": "bad", "target_attributes": ATTRS}, "missing preference_summary"),
    "wrong type of id": ({"seed_id": ["bad"], "preference_summary": "x", "target_attributes": ATTRS},
                         "bad seed_id"),
    "wrong type of summary": ({"seed_id": "bad", "preference_summary": 42, "target_attributes": ATTRS},
                              "bad preference_summary"),
    "wrong type of attributes": ({"seed_id": "bad", "preference_summary": "x", "target_attributes": 7},
                                 "bad target_attributes"),
    "wrong type of target": ({"seed_id": "bad", "preference_summary": "x", "target_attributes": ATTRS,
                              "target_item_id": {"id": "m1"}}, "bad target_item_id"),
    "empty summary": ({"seed_id": "bad", "preference_summary": "", "target_attributes": ATTRS},
                      "empty preference_summary"),
    "whitespace summary": ({"seed_id": "bad", "preference_summary": " \t\n ", "target_attributes": ATTRS},
                           "empty preference_summary"),
    "summary over max_summary_chars": ({"seed_id": "bad", "preference_summary": "likes " * 700,
                                        "target_attributes": ATTRS}, "preference_summary too long"),
    "duplicate seed id": ({**GOOD[1], "preference_summary": "another summary"}, "duplicate seed_id"),
    "invalid UTF-8": (b'{"seed_id": "bad", "preference_summary": "caf\xe9", "target_attributes": {}}',
                      "invalid UTF-8"),
    "invalid JSON": (b'{"seed_id": "bad", "preference_summary": ', "invalid JSON"),
    "target absent from the catalog": ({"seed_id": "bad", "preference_summary": "x", "target_attributes": ATTRS,
                                        "target_item_id": "no-such-item"}, "target_item_id not in catalog"),
}


@pytest.mark.parametrize("case", BAD_SEED_ROWS)
def test_a_bad_seed_row_is_skipped_and_counted(tmp_path: Path, generate, case: str) -> None:
    row, reason = BAD_SEED_ROWS[case]
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [*GOOD[:3], row, *GOOD[3:]])
    result = generate(seeds=seeds)
    rows = check_complete(result)
    assert result.manifest["seeds"]["skipped"] == {reason: 1}
    assert result.manifest["seeds"]["num_valid"] == len(GOOD)
    assert "bad" not in {r["seed_id"] for r in rows}
    assert {r["seed_id"] for r in rows} == {g["seed_id"] for g in GOOD}
    assert reason in result.stderr  # the run says so before it starts, too


def test_bad_rows_in_a_parquet_seed_file_are_skipped_and_counted(tmp_path: Path, generate) -> None:
    n = len(GOOD) + 2
    table = pa.table({
        "seed_id": [g["seed_id"] for g in GOOD] + ["bad-utf8", "bad-null"],
        "preference_summary": invalid_utf8_strings([g["preference_summary"].encode() for g in GOOD]
                                                   + [b"caf\xe9", b"x"]),
        "target_attributes": [json.dumps(g["target_attributes"]) for g in GOOD] + [json.dumps(ATTRS), None],
        "target_item_id": pa.array([g["target_item_id"] for g in GOOD] + [None, None], pa.string()),
    })
    assert table.num_rows == n
    pq.write_table(table, tmp_path / "seeds.parquet")
    result = generate(seeds=tmp_path / "seeds.parquet")
    check_complete(result)
    assert result.manifest["seeds"]["skipped"] == {"invalid UTF-8": 1, "missing target_attributes": 1}


def test_a_summary_too_long_for_the_context_is_a_recorded_conversation(tmp_path: Path, generate,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Under max_summary_chars but too many tokens for max_model_len: known only once the prompt is rendered, so
    the conversation is kept, with outcome context_limit and the reason, instead of being dropped."""
    monkeypatch.setattr(engine, "open_engines", fake_open_engines(make_clients(max_model_len=512)))
    long = {"seed_id": "long", "preference_summary": "likes " * 600, "target_attributes": ATTRS}
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [*GOOD, long])
    result = generate(seeds=seeds)
    rows = check_complete(result)
    [row] = [r for r in rows if r["seed_id"] == "long"]
    assert (row["outcome"], row["num_turns"]) == ("context_limit", 0)
    assert "max_model_len" in row["error"]
    assert result.manifest["totals"]["outcomes"]["context_limit"] >= 1


# ---------------------------------------------------------------------------------- bad catalog rows


def catalog_with(tmp_path: Path, *extra: Any) -> Path:
    return write_jsonl(tmp_path / "catalog-extra.jsonl", [*CATALOG_ROWS, *extra])


BAD_CATALOG_ROWS = {
    "missing item_id": ({"title": "Nameless", "year": 2000}, "missing item_id"),
    "missing title": ({"item_id": "x1", "year": 2000}, "missing title"),
    "duplicate item_id": ({"item_id": "m1", "title": "Another Heat", "year": 2001}, "duplicate item_id"),
    "invalid UTF-8": (b'{"item_id": "x2", "title": "Caf\xe9 Society"}', "invalid utf-8"),
    "invalid JSON": (b'{"item_id": "x3", "title": ', "invalid json"),
    "not an object": (b'["x4", "Title"]', "not a json object"),
}


@pytest.mark.parametrize("case", BAD_CATALOG_ROWS)
def test_a_bad_catalog_row_is_skipped_and_counted(tmp_path: Path, generate, case: str) -> None:
    row, reason = BAD_CATALOG_ROWS[case]
    result = generate(catalog=catalog_with(tmp_path, row))
    check_complete(result)
    catalog = result.manifest["catalog"]
    assert catalog["skipped"] == {reason: 1}
    assert catalog["num_items"] == len(CATALOG_ROWS)


def test_duplicate_catalog_titles_ground_to_the_first_and_are_counted(tmp_path: Path, generate) -> None:
    again = {"item_id": "m1-again", "title": "Heat", "year": 1995, "attributes": {"genres": ["Crime"]}}
    result = generate(catalog=catalog_with(tmp_path, again))
    rows = check_complete(result)
    path = tmp_path / "catalog-extra.jsonl"
    assert result.manifest["catalog"] == {"path": str(path), "sha256": file_digest(path), "num_items": 8,
                                          "skipped": {}, "duplicate_titles": 1, "cards_cut": 0}
    heat_turns = [t for r in rows for t in r["turns"] if "Heat (1995)" in t["text"]]
    assert heat_turns and all("m1" in t["item_ids"] for t in heat_turns)
    assert "m1-again" not in {i for r in rows for i in r["recommended_item_ids"]}


# ---------------------------------------------------------------- whole files unusable: one error, exit 2


def _parquet(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def _raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


UNUSABLE = {
    "seeds: missing column": (
        lambda d: ("seeds", _parquet(d / "s.parquet", pa.table({"seed_id": ["a"], "target_attributes": ["x"]}))),
        "missing required column 'preference_summary'"),
    "seeds: wrong column type": (
        lambda d: ("seeds", _parquet(d / "s.parquet", pa.table({"seed_id": ["a", "b"], "preference_summary": [1, 2],
                                                                "target_attributes": ["x", "y"]}))),
        "bad preference_summary: 2"),
    "seeds: every row bad": (
        lambda d: ("seeds", write_jsonl(d / "s.jsonl", [{"seed_id": "a", "preference_summary": " ",
                                                        "target_attributes": ATTRS}, b"\xff\xfe"])),
        "empty preference_summary: 1, invalid UTF-8: 1"),
    "seeds: empty file": (lambda d: ("seeds", write_jsonl(d / "s.jsonl", [])), "no rows"),
    "seeds: not Parquet": (
        lambda d: ("seeds", _raw(d / "s.parquet", b"PAR1 no")),
        "not a readable parquet file"),
    "seeds: unknown format": (
        lambda d: ("seeds", _raw(d / "s.csv", b"seed_id\n")),
        "unsupported seed file type"),
    "seeds: every target absent from the catalog": (
        lambda d: ("seeds", write_jsonl(d / "s.jsonl", [{**g, "target_item_id": "gone"} for g in GOOD])),
        "target_item_id not in catalog: 6"),
    "catalog: missing column": (
        lambda d: ("catalog", write_jsonl(d / "c.jsonl", [{"item_id": "m1", "name": "Heat"}])),
        "missing required column(s) title"),
    "catalog: empty": (lambda d: ("catalog", write_jsonl(d / "c.jsonl", [])), "no usable rows"),
    "catalog: every row invalid UTF-8": (
        lambda d: ("catalog", write_jsonl(d / "c.jsonl", [b'{"item_id": "\xff"}'])), "invalid utf-8: 1"),
    "catalog: not Parquet": (
        lambda d: ("catalog", _raw(d / "c.parquet", b"garbage")),
        "cannot read parquet"),
}


@pytest.mark.parametrize("case", UNUSABLE)
def test_an_unusable_file_is_one_error_before_generation(tmp_path: Path, generate, case: str) -> None:
    make, expected = UNUSABLE[case]
    which, path = make(tmp_path)
    result = generate(**{which: path})
    line = result.error()
    assert expected in line and str(path) in line
    assert not result.out.exists()  # refused before the output directory was touched


# ----------------------------------------------------------------------- bad config and environment


def test_unknown_key(generate) -> None:
    assert "conversation.max_turn: unknown key" in generate(config={"conversation": {"max_turn": 4}}).error()


def test_out_of_range_values(generate) -> None:
    assert "max_in_flight" in generate(config={"max_in_flight": 0}).error()
    assert "user.sampling" in generate(config={"user": {"sampling": {"temperature": -1}}}).error()


# Sampling values vLLM's SamplingParams accepts but a run cannot use: refused before start, naming the key.
UNUSABLE_SAMPLING = {
    "n above 1": ({"user": {"sampling": {"n": 2}}}, "user.sampling.n: 2, but a turn takes one completion"),
    "logprobs above max_logprobs": ({"recommender": {"sampling": {"logprobs": 21}}},
                                    "recommender.sampling.logprobs: 21 is above the engine's max_logprobs=20"),
    "logprobs above a lowered max_logprobs": ({"engine": {"max_logprobs": 5}, "user": {"sampling": {"logprobs": 6}}},
                                              "user.sampling.logprobs: 6 is above the engine's max_logprobs=5"),
    "all logprobs under a cap": ({"user": {"sampling": {"prompt_logprobs": -1}}},
                                 "user.sampling.prompt_logprobs: -1 is above the engine's max_logprobs=20"),
    "max_tokens null": ({"recommender": {"sampling": {"max_tokens": None}}},
                        "recommender.sampling.max_tokens: null, but each prompt is checked against max_model_len"),
}


@pytest.mark.parametrize("case", UNUSABLE_SAMPLING)
def test_sampling_values_the_run_cannot_use_are_refused_before_start(generate, case: str) -> None:
    config, expected = UNUSABLE_SAMPLING[case]
    result = generate(config=config)
    assert expected in result.error()
    assert not result.out.exists()


def test_logprobs_within_the_engines_max_logprobs_are_accepted(generate) -> None:
    check_complete(generate(config={"engine": {"max_logprobs": 30}, "user": {"sampling": {"logprobs": 25, "n": 1}}}))


def test_adapter_on_an_engine_without_lora(tmp_path: Path, generate) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    line = generate(config={"engine": {"enable_lora": False}, "recommender": {"adapter": str(adapter)}}).error()
    assert "recommender.adapter" in line and "engine.enable_lora is false" in line


def test_output_holding_a_different_run(tmp_path: Path, generate) -> None:
    check_complete(generate())
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    line = generate(config={"conversation": {"max_turns": 6}}).error()
    assert "holds a run with a different config" in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()} == before


def test_output_holding_other_files(tmp_path: Path, generate) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert "is not empty and holds no manifest.json" in generate().error()


def test_unwritable_output(tmp_path: Path, generate) -> None:
    # A path below a regular file: unwritable even for root (chmod does not stop root).
    (tmp_path / "file").write_text("")
    line = generate(out=tmp_path / "file" / "out").error()
    assert "cannot write to output directory" in line and str(tmp_path / "file" / "out") in line


def test_an_edited_seed_file_with_the_same_row_count_is_refused_and_touches_nothing(tmp_path: Path, generate) -> None:
    seeds = write_jsonl(tmp_path / "seeds.jsonl", GOOD)
    check_complete(generate(seeds=seeds, args=("--num-dialogues", "6")), num=6)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    rows = GOOD[:6]
    rows[0] = {**rows[0], "preference_summary": rows[0]["preference_summary"] + " Edited."}
    write_jsonl(seeds, rows)  # same path, same row count: only the content tells
    line = generate(seeds=seeds, args=("--num-dialogues", "6")).error()
    assert "holds a run with a different config" in line and "differs in: seeds" in line
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()} == before  # untouched


def test_unreadable_shard_in_the_output(tmp_path: Path, generate) -> None:
    check_complete(generate())
    (tmp_path / "out" / "shard-00001.parquet").write_bytes(b"PAR1 cut short")
    line = generate().error()
    assert "shard-00001.parquet is not a readable shard" in line and "move it away" in line


def test_unreadable_manifest(tmp_path: Path, generate) -> None:
    check_complete(generate())
    (tmp_path / "out" / "manifest.json").write_text("{cut sh")
    assert "manifest.json is unreadable" in generate().error()


def test_engine_that_cannot_start_names_the_cause_and_the_log(tmp_path: Path, generate,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's own exception only says "see root cause above": the cause is the engine core's exception line,
    which went to the log; an older run's lines in the same log are not taken for it."""
    log = tmp_path / "out" / "logs" / "engine.log"
    log.parent.mkdir(parents=True)
    log.write_text("(EngineCore pid=1) ERROR KeyError: from an earlier run\n")

    @contextlib.asynccontextmanager
    async def failing(config: Any) -> AsyncIterator[dict]:
        os.write(2, b"(EngineCore pid=2) ERROR [core.py:1] ValueError: Available memory on node 0 (1.0/2.0 GiB) "
                    b"is less than requested memory for kv (9.0 GiB).\n")
        raise engine.EngineStartError("vLLM could not start the engine: Engine core initialization failed. "
                                      "See root cause above.")
        yield {}

    monkeypatch.setattr(engine, "open_engines", failing)
    line = generate().error()
    assert "vLLM could not start the engine" in line
    assert "cause: ValueError: Available memory on node 0" in line and "earlier run" not in line
    assert f"vLLM's log: {log}" in line


def test_engine_death_is_named_exit_1(tmp_path: Path, generate, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line's side of engine death (the real engine core is killed in tests/test_vllm_faults.py)."""
    monkeypatch.setattr(engine, "open_engines", fake_open_engines(make_clients(dead_on=lambda rid: rid == "s08@1")))
    result = generate()
    assert result.code == 1 and "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("interplay: stopped:")]
    assert "engine died" in line  # the fake's words; the real message is checked in tests/test_vllm_faults.py
    assert f"vLLM's log: {tmp_path / 'out' / 'logs' / 'engine.log'}" in result.stderr
    assert "rerun the same command to resume" in result.stderr
    assert result.manifest["status"] == "running" and 0 < len(result.rows()) < NUM
    monkeypatch.setattr(engine, "open_engines", fake_open_engines(make_clients()))
    check_complete(generate())


def test_failed_conversations_are_retried_by_a_rerun(tmp_path: Path, generate,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "open_engines", fake_open_engines(make_clients(fail_on=lambda rid: rid == "s02@0")))
    result = generate()
    assert result.code == 1 and "Traceback" not in result.stderr
    assert "INCOMPLETE" in result.stdout and "rerun to retry 1 failed conversations" in result.stdout
    assert 2 not in {r["conversation_index"] for r in result.rows()}
    monkeypatch.setattr(engine, "open_engines", fake_open_engines(make_clients()))
    check_complete(generate())


def test_most_conversations_failing_stops_early_exit_1_naming_the_error(tmp_path: Path, generate,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request fails the same way (as with a sampling value the engine rejects): the run stops after 16
    conversations instead of trying all 40, and says why in one line."""
    log = EngineLog()
    monkeypatch.setattr(engine, "open_engines", fake_open_engines(make_clients(log, fail_on=lambda rid: True)))
    result = generate(args=("--num-dialogues", "40"))
    assert result.code == 1 and "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("interplay: stopped early:")]
    assert "16 of the last 16 conversations failed, 16 of them with: user turn 0: RuntimeError: boom at s" in line
    assert "max_attempts=3" in line
    assert len(log.conversation_ids()) < 40 and result.rows() == []
    assert result.manifest["failures"]["num_pending_retry"] == len(log.conversation_ids())
    monkeypatch.setattr(engine, "open_engines", fake_open_engines(make_clients()))
    check_complete(generate(args=("--num-dialogues", "40")), num=40)
