"""Failed requests: retried by later runs up to max_attempts, exactly once kept, and a run in which most recent
conversations fail stops early. The fake engine with the real scheduler and writer; the command line's side is
in tests/test_bad_inputs.py, a SIGKILL mid-append in tests/test_faults.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from fake_engine import EngineLog, fake_open_engines, make_clients
from interplay.generator.config import GenerateConfig
from interplay.generator.output.failures import Attempts, read_failures
from interplay.generator.output.layout import is_interplay_name
from interplay.generator.output.storage import Storage
from interplay.generator.runtime.recent import RecentFailures, error_kind, shorten
from interplay.generator.runtime.run import Generation

NUM = 20


def generate(config: GenerateConfig, out: Path, *, overwrite: bool = False,
             **client_kw: Any) -> tuple[dict[str, Any], EngineLog, Generation]:
    log = EngineLog()
    generation = Generation(config, out, overwrite=overwrite)
    manifest = asyncio.run(generation.run(fake_open_engines(make_clients(log, **client_kw))))
    return manifest, log, generation


def rows(out: Path) -> dict[int, dict[str, Any]]:
    """Rows by conversation_index; no index twice."""
    found = [r for p in sorted(out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    by_index = {r["conversation_index"]: r for r in found}
    assert len(by_index) == len(found), "a conversation is in two shards"
    return by_index


def failure_lines(out: Path) -> list[dict[str, Any]]:
    entries, damaged = read_failures(Storage(out), "failures.jsonl")
    assert not damaged
    return entries


@pytest.fixture
def config(make_config) -> GenerateConfig:
    return make_config(num_dialogues=NUM)


# ------------------------------------------------------------------------------------------- retries


def test_a_request_failing_on_its_first_attempt_is_retried_by_the_next_run(tmp_path: Path, config) -> None:
    clean_manifest, _, _ = generate(config, tmp_path / "clean")
    out = tmp_path / "out"
    failing = {"s03@1", "s11@0"}  # conversations 3 and 11, on their first attempt only
    manifest, _, generation = generate(config, out, fail_on=lambda rid: rid in failing)
    assert manifest["status"] == "running"  # not done: pending retry
    assert generation.num_done == NUM - 2 and generation.num_pending_retry == 2
    assert sorted(rows(out)) == [i for i in range(NUM) if i not in (3, 11)]  # no error row written
    assert manifest["failures"] == {"log": "failures.jsonl", "max_attempts": 3, "num_pending_retry": 2}
    assert sorted(e["index"] for e in failure_lines(out)) == [3, 11]
    assert "boom at s03@1" in {e["index"]: e["error"] for e in failure_lines(out)}[3]
    assert manifest["runs"][-1]["num_failed_to_retry"] == 2

    manifest, log, _ = generate(config, out)
    assert manifest["status"] == "complete" and manifest["failures"]["num_pending_retry"] == 0
    assert set(log.conversation_ids()) == {"s03", "s11"}  # only the failed ones are generated again
    assert rows(out) == rows(tmp_path / "clean")  # exactly once, and as an uninterrupted run made them
    assert manifest["totals"] == clean_manifest["totals"]


def test_a_request_failing_every_time_is_an_error_row_after_max_attempts_runs(tmp_path: Path, config) -> None:
    out = tmp_path / "out"
    for attempt in (1, 2):
        manifest, log, _ = generate(config, out, fail_on=lambda rid: rid == "s05@0")
        assert "s05" in log.conversation_ids()
        assert manifest["status"] == "running" and 5 not in rows(out)  # never earlier
        assert [e["index"] for e in failure_lines(out)] == [5] * attempt
        assert manifest["failures"]["num_pending_retry"] == 1
    manifest, log, _ = generate(config, out, fail_on=lambda rid: rid == "s05@0")
    assert log.conversation_ids() == ["s05"]
    assert manifest["status"] == "complete" and manifest["failures"]["num_pending_retry"] == 0
    row = rows(out)[5]
    assert row["outcome"] == "error" and row["error"].endswith("(failed 3 attempts)")
    assert "boom at s05@0" in row["error"]
    assert len(failure_lines(out)) == 2  # the last attempt is the row, not a line
    manifest, log, _ = generate(config, out, fail_on=lambda rid: rid == "s05@0")
    assert log.calls == [] and sorted(rows(out)) == list(range(NUM))  # never twice


def test_max_attempts_1_keeps_the_error_row_at_once(tmp_path: Path, make_config) -> None:
    manifest, _, _ = generate(make_config(num_dialogues=NUM, max_attempts=1), tmp_path / "out",
                              fail_on=lambda rid: rid == "s05@0")
    assert manifest["status"] == "complete" and rows(tmp_path / "out")[5]["outcome"] == "error"
    assert not (tmp_path / "out" / "failures.jsonl").exists()  # made at the first failure only


def test_raising_max_attempts_on_a_rerun_retries_again(tmp_path: Path, make_config) -> None:
    """max_attempts is a runtime setting: a rerun may change it; attempts already used count."""
    out = tmp_path / "out"
    generate(make_config(num_dialogues=NUM, max_attempts=2), out, fail_on=lambda rid: rid == "s05@0")
    manifest, _, _ = generate(make_config(num_dialogues=NUM, max_attempts=3), out, fail_on=lambda rid: rid == "s05@0")
    assert manifest["status"] == "running" and len(failure_lines(out)) == 2
    manifest, _, _ = generate(make_config(num_dialogues=NUM, max_attempts=3), out)
    assert manifest["status"] == "complete" and rows(out)[5]["outcome"] != "error"


def test_the_failure_log_is_interplays_own_and_overwrite_deletes_it(tmp_path: Path, config) -> None:
    out = tmp_path / "out"
    generate(config, out, fail_on=lambda rid: rid == "s05@0")
    assert is_interplay_name("failures.jsonl") and is_interplay_name("failures-p003of008.jsonl")
    assert not is_interplay_name("failures.txt")
    manifest, _, _ = generate(config, out, overwrite=True)
    assert manifest["status"] == "complete" and not (out / "failures.jsonl").exists()


def test_attempts_count_only_conversations_not_done() -> None:
    attempts = Attempts([{"index": 1, "error": "x"}, {"index": 1, "error": "x"}, {"index": 2, "error": "y"}],
                        done={2}, max_attempts=3)
    assert len(attempts) == 1 and attempts[1] == 2 and attempts[2] == 0
    last = {"conversation_index": 1, "outcome": "error", "error": "user turn 0: E: e"}
    assert attempts.settle(last) is None and last["error"] == "user turn 0: E: e (failed 3 attempts)"
    assert len(attempts) == 0
    first = {"conversation_index": 7, "outcome": "error", "error": "e"}
    assert attempts.settle(first) == {"index": 7, "error": "e"} and attempts[7] == 1
    assert attempts.settle({"conversation_index": 7, "outcome": "accepted", "error": None}) is None
    assert len(attempts) == 0


def test_a_cut_off_failure_line_is_dropped_and_the_log_rewritten(tmp_path: Path, config) -> None:
    out = tmp_path / "out"
    generate(config, out, fail_on=lambda rid: rid in ("s03@1", "s05@0"))
    data = (out / "failures.jsonl").read_bytes()
    (out / "failures.jsonl").write_bytes(data[:-len(data.splitlines()[-1]) // 2 - 1])  # the last line cut short
    assert read_failures(Storage(out), "failures.jsonl")[1]  # damaged
    manifest, log, _ = generate(config, out)
    assert manifest["status"] == "complete" and sorted(rows(out)) == list(range(NUM))
    assert not read_failures(Storage(out), "failures.jsonl")[1]


# --------------------------------------------------------------------------------------- early stop


def test_most_recent_conversations_failing_stops_the_run_early(tmp_path: Path, make_config) -> None:
    config = make_config(num_dialogues=60)
    out = tmp_path / "out"
    manifest, log, generation = generate(config, out, fail_on=lambda rid: True)
    started = len(log.conversation_ids())
    assert 16 <= started <= 16 + config.max_in_flight  # stopped once 16 had failed; the active ones finished
    assert generation.stopped_early.startswith("16 of the last 16 conversations failed, 16 of them with: ")
    assert "RuntimeError: boom at s" in generation.stopped_early
    assert manifest["status"] == "running" and manifest["runs"][-1]["stopped_early"] == generation.stopped_early
    assert rows(out) == {} and len(failure_lines(out)) == started  # every finished one is on record
    manifest, _, generation = generate(config, out)  # the cause fixed: the rerun completes
    assert manifest["status"] == "complete" and sorted(rows(out)) == list(range(60))
    assert generation.stopped_early is None


def test_a_few_failures_do_not_stop_the_run(tmp_path: Path, config) -> None:
    manifest, log, generation = generate(config, tmp_path / "out", fail_on=lambda rid: rid.endswith("@3"))
    assert generation.stopped_early is None and len(log.conversation_ids()) == NUM


def test_recent_failures_window() -> None:
    recent = RecentFailures(window=10, min_finished=4, max_failed_share=0.8)
    for _ in range(3):
        recent.add("user turn 0: RuntimeError: boom")
    assert not recent.is_failing  # too few to judge
    recent.add("user turn 2: RuntimeError: boom")
    assert recent.is_failing and recent.num_failed == 4
    for _ in range(3):
        recent.add(None)
    assert not recent.is_failing  # 4 of 7
    for _ in range(10):
        recent.add(None)
    assert recent.num_failed == 0 and recent.num_seen == 10  # the failures slid out of the window
    for _ in range(7):
        recent.add("x")
    assert not recent.is_failing  # 7 of 10
    recent.add("x")
    assert recent.is_failing  # 8 of 10


def test_the_most_common_error_is_grouped_by_cause() -> None:
    recent = RecentFailures()
    for i in range(5):
        recent.add(f"recommender turn {i}: RuntimeError: boom at s{i:02d}@{i}")
    recent.add("user turn 0: ValueError: other")
    recent.add(None)
    assert recent.most_common() == ("recommender turn 4: RuntimeError: boom at s04@4", 5)
    assert recent.describe() == ("6 of the last 7 conversations failed, 5 of them with: recommender turn 4: "
                                 "RuntimeError: boom at s04@4")
    assert error_kind("user turn 3: E: at 12") == error_kind("recommender turn 9: E: at 4") == "E: at #"
    assert shorten("a  b\n" + "x" * 300, 20) == "a b " + "x" * 13 + "..."
    assert RecentFailures().most_common() == ("", 0)


def test_the_manifest_reports_failures_pending_retry(tmp_path: Path, config) -> None:
    out = tmp_path / "out"
    generate(config, out, fail_on=lambda rid: rid == "s05@0")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failures"]["num_pending_retry"] == 1 and manifest["status"] == "running"


def test_a_partition_keeps_its_own_failure_log(tmp_path: Path, config) -> None:
    from interplay.common.partition import Partition

    out, parts = tmp_path / "out", [Partition(0, 2), Partition(1, 2)]
    for part in parts:
        generation = Generation(config, out, partition=part)
        asyncio.run(generation.run(fake_open_engines(make_clients(fail_on=lambda rid: rid.endswith("@0")
                                                                  and rid[:3] in ("s03", "s04")))))
    logs = {p.tag: read_failures(Storage(out), f"failures-{p.tag}.jsonl")[0] for p in parts}
    assert sorted(e["index"] for lines in logs.values() for e in lines) == [3, 4]  # each in its owner's log
    assert not (out / "failures.jsonl").exists()
    for part in parts:  # the rerun retries each partition's own
        generation = Generation(config, out, partition=part)
        manifest = asyncio.run(generation.run(fake_open_engines(make_clients())))
        assert manifest["status"] == "complete" and manifest["failures"]["num_pending_retry"] == 0
    assert sorted(rows(out)) == list(range(NUM))
