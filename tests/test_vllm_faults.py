"""Faults with the real vLLM CPU engine and SmolLM2, through the real command line. Four engine start-ups in all.

One corpus directory goes through three runs:
  1. vLLM's engine-core process is SIGKILLed once the first shard is written: exit 1, "engine died" named, what
     was finished is on disk, and vLLM's processes are gone;
  2. the same command again; Ctrl-C (SIGINT to the process group, as a terminal sends it) once its first new shard
     is written: vLLM's processes stop on it too, so the conversations in flight are abandoned, not cut short and
     written; exit 1, "interrupted" (not "engine died"), what was finished is on disk;
  3. the same command again: exit 0, every conversation exactly once.
And one engine start that fails: a KV cache larger than the machine's memory gives one message and exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import pytest

from conftest import logged
from interplay.generator.output.records import SCHEMA
from interplay.prepare import default_model_dir

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NUM = 8
# Two conversations in flight and two per shard: each run stops with most of the corpus still to do. A small KV
# cache: the machine is shared.
ARGS = ["--config", str(ROOT / "configs" / "embedded.yaml"), "--num-dialogues", str(NUM),
        "--set", "engine.kv_cache_memory_bytes=268435456",
        "--set", "conversation.max_turns=4", "--set", "user.sampling.max_tokens=32",
        "--set", "recommender.sampling.max_tokens=48", "--set", "dialogues_per_shard=2",
        "--set", "max_in_flight=2"]
START_TIMEOUT = 600  # seconds: engine start-up on a busy 2-core machine, not a performance bound


def start(out: Path, *extra: str) -> subprocess.Popen:
    # Its own process group, so that the test can signal it the way a terminal does, and clean it up.
    return subprocess.Popen([sys.executable, "-m", "interplay", "generate", "--output", str(out), *ARGS, *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_shards(proc: subprocess.Popen, out: Path, more_than: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while len(list(out.glob("*.parquet"))) <= more_than:
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f"the run ended or stalled before writing a shard:\n{stdout}{stderr}")
        time.sleep(0.05)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        stdout, stderr = proc.communicate(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the run did not exit:\n{stdout}{stderr}")
    return proc.returncode, stdout, stderr


def snapshot(out: Path) -> dict[str, Any]:
    """What a reader sees now: every shard read in full, the manifest, and any leftover temporary file."""
    rows = []
    for path in sorted(out.glob("*.parquet")):
        table = pq.read_table(path)
        assert table.schema.equals(SCHEMA, check_metadata=False)
        rows += table.to_pylist()
    return {"rows": rows, "manifest": json.loads((out / "manifest.json").read_text()),
            "files": sorted(p.name for p in out.glob("*.parquet")), "logged": [e["file"] for e in logged(out)],
            "tmp": [p.name for p in out.iterdir() if p.name.endswith(".tmp")]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, Any]]:
    if not (default_model_dir() / "config.json").is_file():
        pytest.fail("the embedded model is not prepared: run `interplay prepare` (make test does)")
    out = tmp_path_factory.mktemp("vllm-faults") / "corpus"
    result: dict[str, dict[str, Any]] = {}

    # 1. Kill the engine core.
    proc = start(out)
    try:
        wait_for_shards(proc, out, more_than=0)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        cores = [p for p in descendants if "EngineCore" in " ".join([p.name(), *p.cmdline()])]
        assert len(cores) == 1, [(p.pid, p.name()) for p in descendants]
        cores[0].kill()
        code, stdout, stderr = finish(proc)
        _, alive = psutil.wait_procs(descendants, timeout=120)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]  # zombies: PID 1's job
    finally:
        with_group_gone(proc)
    result["engine_killed"] = {"code": code, "stdout": stdout, "stderr": stderr, "left_running": alive,
                               **snapshot(out)}

    # 2. Ctrl-C once the resumed run has written a shard of its own.
    before = len(result["engine_killed"]["files"])
    proc = start(out)
    try:
        wait_for_shards(proc, out, more_than=before)
        os.killpg(proc.pid, signal.SIGINT)
        code, stdout, stderr = finish(proc)
    finally:
        with_group_gone(proc)
    result["interrupted"] = {"code": code, "stdout": stdout, "stderr": stderr, **snapshot(out)}

    # 3. Run to the end.
    code, stdout, stderr = finish(start(out))
    result["completed"] = {"code": code, "stdout": stdout, "stderr": stderr, **snapshot(out)}
    return result


def with_group_gone(proc: subprocess.Popen) -> None:
    """Whatever happened, leave no process of the run behind (the asserts say whether it cleaned up itself)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def check_consistent(stage: dict[str, Any]) -> None:
    """Readable shards, no conversation twice, no partial file, a shard log and manifest that agree with them."""
    indices = [r["conversation_index"] for r in stage["rows"]]
    assert len(indices) == len(set(indices))
    assert stage["tmp"] == []
    manifest = stage["manifest"]
    assert stage["logged"] == stage["files"] and manifest["num_shards"] == len(stage["files"])
    assert manifest["totals"]["num_dialogues"] == len(stage["rows"])


def test_engine_death_is_named_and_what_finished_is_kept(runs):
    stage = runs["engine_killed"]
    assert stage["code"] == 1, stage["stderr"]
    assert "engine died" in stage["stderr"] and "vLLM's log:" in stage["stderr"]
    assert "rerun the same command to resume" in stage["stderr"]
    assert "Traceback" not in stage["stderr"] + stage["stdout"]
    assert "INCOMPLETE" in stage["stdout"]
    check_consistent(stage)
    assert 2 <= len(stage["rows"]) < NUM and stage["manifest"]["status"] == "running"
    assert stage["left_running"] == []  # no vLLM worker or helper outlives the run


def test_ctrl_c_in_the_terminal_stops_cleanly(runs):
    stage, earlier = runs["interrupted"], runs["engine_killed"]
    assert stage["code"] == 1, stage["stderr"]
    assert f"{len(earlier['rows'])} of {NUM} dialogues already in" in stage["stderr"]
    [line] = [x for x in stage["stderr"].splitlines() if x.startswith("interplay: stopped:")]
    assert "interrupted" in line and "engine died" not in line
    assert "Traceback" not in stage["stderr"] + stage["stdout"]
    check_consistent(stage)
    assert len(earlier["rows"]) < len(stage["rows"]) < NUM and stage["manifest"]["status"] == "running"
    # The first run's shards are untouched; the abandoned conversations were not written as failed ones.
    assert stage["files"][:len(earlier["files"])] == earlier["files"]
    assert "error" not in {r["outcome"] for r in stage["rows"]}


def test_rerun_completes_every_conversation_exactly_once(runs):
    stage = runs["completed"]
    assert stage["code"] == 0, stage["stderr"]
    assert f"{len(runs['interrupted']['rows'])} of {NUM} dialogues already in" in stage["stderr"]
    check_consistent(stage)
    assert sorted(r["conversation_index"] for r in stage["rows"]) == list(range(NUM))
    assert len({r["conversation_id"] for r in stage["rows"]}) == NUM
    assert stage["manifest"]["status"] == "complete"
    assert len(stage["manifest"]["runs"]) == 3  # each run, even a stopped one, records itself


def test_kv_cache_too_large_fails_at_start_with_one_message(tmp_path: Path):
    out = tmp_path / "out"
    huge = psutil.virtual_memory().total * 4
    code, stdout, stderr = finish(start(out, "--set", f"engine.kv_cache_memory_bytes={huge}"))
    assert code == 2, stdout + stderr
    [message] = [line for line in stderr.splitlines() if line.startswith("interplay: error:")]
    assert "vLLM could not start the engine" in message
    assert "ValueError: Available memory" in message and "kv" in message  # vLLM's own cause, from its log
    assert f"vLLM's log: {out / 'logs' / 'engine.log'}" in message
    assert "Traceback" not in stderr + stdout
    assert not list(out.glob("*.parquet"))
