"""SIGKILL at chosen and at random moments, then rerun: every conversation exactly once, every shard readable.

Each killed run is a real process (tests/fault_runner.py: the real Generation, scheduler and writer on the fake
engine) that kills itself with SIGKILL at one point of the writer's life. After each kill the directory must be
what any reader may see (complete Parquet files only, no conversation twice); after the rerun it must equal a
run that was never interrupted, row for row (the fake engine is deterministic).

Also here: vLLM's processes do not outlive a killed generator, and Ctrl-C through the command line. The same
faults with the real engine are in tests/test_vllm_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from fake_engine import EngineLog, fake_open_engines, make_clients
from interplay.generator.config import GenerateConfig
from interplay.generator.output.failures import read_failures
from interplay.generator.output.shardlog import read_log
from interplay.generator.output.storage import Storage, tmp_target
from interplay.generator.runtime.run import Generation

RUNNER = Path(__file__).with_name("fault_runner.py")
NUM, PER_SHARD = 22, 5  # five shards, the last one not full


@pytest.fixture
def config(make_config) -> GenerateConfig:
    return make_config(num_dialogues=NUM, dialogues_per_shard=PER_SHARD, max_in_flight=4)


@pytest.fixture
def clean(tmp_path: Path, config: GenerateConfig) -> dict[str, Any]:
    """The uninterrupted run: its rows by conversation id, its manifest and how many requests it sent."""
    out, log = tmp_path / "clean", EngineLog()
    manifest = asyncio.run(Generation(config, out).run(fake_open_engines(make_clients(log))))
    assert manifest["status"] == "complete" and manifest["totals"]["num_dialogues"] == NUM
    return {"rows": rows_by_id(out), "manifest": manifest, "num_requests": len(log.calls)}


def run_killed(config: GenerateConfig, out: Path, point: str, n: int = 1) -> subprocess.CompletedProcess:
    config_path = out.parent / "config.json"
    config_path.write_text(json.dumps(config.model_dump(mode="json")))
    return subprocess.run([sys.executable, str(RUNNER), str(config_path), str(out), point, str(n)],
                          capture_output=True, text=True, timeout=120)


def rows_by_id(out: Path) -> dict[str, dict[str, Any]]:
    rows = [r for p in sorted(out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    by_id = {r["conversation_id"]: r for r in rows}
    assert len(by_id) == len(rows), "a conversation is in two shards"
    return by_id


def check_after_kill(out: Path, proc: subprocess.CompletedProcess) -> dict[str, Any]:
    """The kill landed, and the directory is safe to read and to resume from; returns the manifest."""
    assert proc.returncode == -signal.SIGKILL, f"the kill point was not reached:\n{proc.stdout}{proc.stderr}"
    manifest = json.loads((out / "manifest.json").read_text())  # always present and parseable
    assert manifest["status"] == "running"
    indices = [i for p in sorted(out.glob("*.parquet"))
               for i in pq.read_table(p).column("conversation_index").to_pylist()]  # every file readable
    assert len(indices) == len(set(indices)) <= NUM
    return manifest


def rerun(config: GenerateConfig, out: Path, clean: dict[str, Any]) -> None:
    """Resume to the end and compare with the uninterrupted run."""
    manifest = asyncio.run(Generation(config, out).run(fake_open_engines(make_clients())))
    assert manifest["status"] == "complete"
    assert rows_by_id(out) == clean["rows"]
    assert listed(out) == on_disk(out) and manifest["num_shards"] == len(on_disk(out))
    assert manifest["totals"] == clean["manifest"]["totals"]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def tmp_files(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name.endswith(".tmp"))


def listed(out: Path) -> list[str]:
    """The shards the shard log names."""
    return [s["file"] for s in read_log(Storage(out), "shards.jsonl")[0]]


def on_disk(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.parquet"))


# Each kill point, and what the directory must look like right after the kill (proof that the kill landed there).
def _first_request(out: Path, manifest: dict[str, Any]) -> None:
    assert on_disk(out) == listed(out) == [] and tmp_files(out) == []


def _before_first_shard(out: Path, manifest: dict[str, Any]) -> None:
    assert on_disk(out) == listed(out) == [] and tmp_files(out) == []


def _mid_shard_write(out: Path, manifest: dict[str, Any]) -> None:
    assert on_disk(out) == listed(out) == ["shard-00000.parquet"]
    [partial] = tmp_files(out)
    assert tmp_target(partial.name) == "shard-00001.parquet" and partial.stat().st_size > 4  # partly written
    with pytest.raises(Exception):
        pq.read_table(partial)  # no footer: exactly what no reader may ever see under a *.parquet name


def _after_shard_rename(out: Path, manifest: dict[str, Any]) -> None:
    assert on_disk(out) == ["shard-00000.parquet", "shard-00001.parquet"]
    assert listed(out) == ["shard-00000.parquet"]  # the rerun must read and log the unlisted shard


def _mid_log_append(out: Path, manifest: dict[str, Any]) -> None:
    assert on_disk(out) == ["shard-00000.parquet", "shard-00001.parquet"]
    entries, damaged = read_log(Storage(out), "shards.jsonl")
    assert damaged and [e["file"] for e in entries] == ["shard-00000.parquet"]  # the second line cut off


def _mid_failure_append(out: Path, manifest: dict[str, Any]) -> None:
    entries, damaged = read_failures(Storage(out), "failures.jsonl")
    assert damaged and [e["index"] for e in entries] == [3]  # the second failure's line cut off
    assert manifest["failures"]["num_pending_retry"] in (0, 1)  # written before or after the first failure


def _mid_manifest_write(out: Path, manifest: dict[str, Any]) -> None:
    # Manifest writes: 1 on opening, 2 after shard 0, 3 after shard 1; killed before the third was renamed.
    assert on_disk(out) == listed(out) == ["shard-00000.parquet", "shard-00001.parquet"]
    assert manifest["num_shards"] == 1
    assert [tmp_target(p.name) for p in tmp_files(out)] == ["manifest.json"]


def _between_shards(out: Path, manifest: dict[str, Any]) -> None:
    assert on_disk(out) == listed(out) == ["shard-00000.parquet", "shard-00001.parquet"]
    assert tmp_files(out) == []


def _before_final_manifest(out: Path, manifest: dict[str, Any]) -> None:
    assert on_disk(out) == listed(out) == [f"shard-{i:05d}.parquet" for i in range(5)]
    assert manifest["runs"] == []  # the run's own summary belongs to the final manifest


KILL_POINTS = [
    ("request", 1, _first_request),
    ("before-shard", 1, _before_first_shard),
    ("mid-shard-write", 2, _mid_shard_write),
    ("after-shard-rename", 2, _after_shard_rename),
    ("mid-log-append", 2, _mid_log_append),
    ("mid-failure-append", 2, _mid_failure_append),
    ("mid-manifest-write", 3, _mid_manifest_write),
    ("between-shards", 2, _between_shards),
    ("before-final-manifest", 1, _before_final_manifest),
]


@pytest.mark.parametrize(("point", "n", "state"), KILL_POINTS, ids=[p for p, _, _ in KILL_POINTS])
def test_sigkill_at_each_point_then_rerun(tmp_path: Path, config: GenerateConfig, clean: dict[str, Any],
                                          point: str, n: int, state) -> None:
    out = tmp_path / "out"
    manifest = check_after_kill(out, run_killed(config, out, point, n))
    state(out, manifest)
    rerun(config, out, clean)


# Fixed seed: the "random" moments are the same on every run, so a failure can be replayed.
RANDOM_SEED = 20260


@pytest.mark.parametrize("case", range(3))
def test_sigkill_at_random_moments_then_rerun(tmp_path: Path, config: GenerateConfig, clean: dict[str, Any],
                                              case: int) -> None:
    """Killed at a random request, killed again at a random request of the resumed run, then resumed to the end."""
    rng = random.Random(RANDOM_SEED + case)
    out = tmp_path / "out"
    first = rng.randrange(1, clean["num_requests"])
    check_after_kill(out, run_killed(config, out, "request", first))
    # Every conversation still missing sends at least one request, so a kill at request <= missing lands.
    missing = NUM - len(rows_by_id(out))
    second = rng.randint(1, missing)
    check_after_kill(out, run_killed(config, out, "request", second))
    rerun(config, out, clean)


# ----------------------------------------------------------------- vLLM's processes die with the generator

# Stands in for the generator: one long-lived child (as vLLM's engine processes are), the watchdog that
# open_engines starts once its engines are up, then waiting to be killed.
HOLDER = """
import subprocess, sys, time
from interplay.generator.runtime.engine import DieWithUs
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
watchdog = DieWithUs()
if sys.argv[1] == "release":
    watchdog.release()  # what open_engines does after shutting its engines down
print(child.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead; reaping it is PID 1's business
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("release", [False, True], ids=["generator-killed", "normal-shutdown"])
def test_engine_processes_do_not_outlive_a_killed_generator(release: bool) -> None:
    import psutil

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "release" if release else "die"],
                              stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(holder.stdout.readline()))
    try:
        holder.kill()
        holder.wait()
        if release:  # the watchdog has already exited: nothing may touch the child
            assert not _gone(child.pid)
        else:
            psutil.wait_procs([child], timeout=60)
            assert _gone(child.pid)
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


# ------------------------------------------------------------------------ Ctrl-C through the command line


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs the main thread")
@pytest.mark.parametrize("engine_stops_too", [False, True], ids=["kill-INT-to-the-generator", "terminal-Ctrl-C"])
def test_first_ctrl_c_through_the_command_line(tmp_path: Path, config: GenerateConfig, engine_stops_too: bool,
                                               monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A terminal's Ctrl-C reaches vLLM's processes too, which stop: the requests in flight then fail as if the
    engine had died. Either way the command says "interrupted", exits 1, and a rerun completes."""
    from interplay.cli import main
    from interplay.generator.runtime import engine

    sent = {"sigint": False}

    def on_submit(request_id: str) -> None:
        if request_id == "s05@0" and not sent["sigint"]:
            sent["sigint"] = True
            os.kill(os.getpid(), signal.SIGINT)

    clients = make_clients(on_submit=on_submit,
                           dead_on=(lambda request_id: sent["sigint"]) if engine_stops_too else None)
    monkeypatch.setattr(engine, "open_engines", fake_open_engines(clients))
    config_path, out = tmp_path / "config.yaml", tmp_path / "out"
    config_path.write_text(json.dumps(config.model_dump(mode="json")))  # JSON is YAML
    args = ["generate", "--config", str(config_path), "--output", str(out)]
    assert main(args) == 1
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("interplay: stopped:")]
    assert line.startswith("interplay: stopped: interrupted") and "engine died" not in line
    assert 0 < len(rows_by_id(out)) < NUM
    monkeypatch.setattr(engine, "open_engines", fake_open_engines(make_clients()))
    assert main(args) == 0
    assert sorted(r["conversation_index"] for r in rows_by_id(out).values()) == list(range(NUM))
