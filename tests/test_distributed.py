"""Partitioned runs: disjoint partitions whose union is the single-process corpus, `interplay status`, layout
checks, and the same through Ray workers on a local cluster (one worker killed mid-run)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from conftest import require
from fake_engine import fake_open_engines, make_clients
from interplay.cli import main
from interplay.common.partition import Partition, partition_of
from interplay.distributed.status import report
from interplay.generator.output.writer import OutputError
from interplay.generator.runtime.run import Generation

TESTS = Path(__file__).resolve().parent


def rows(out: Path) -> list[dict]:
    return [r for p in sorted(out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def generate(config, out: Path, partition: Partition | None = None) -> dict:
    generation = Generation(config, out, partition=partition)
    return asyncio.run(generation.run(fake_open_engines(make_clients())))


def test_partition_of_is_stable_and_spread():
    ids = [f"ml-{u}-{m}" for u in range(50) for m in range(20)]
    assert [partition_of(i, 4) for i in ids[:5]] == [partition_of(i, 4) for i in ids[:5]]  # no per-process salt
    counts = [sum(partition_of(i, 4) == p for i in ids) for p in range(4)]
    assert min(counts) > 0.15 * len(ids)
    with pytest.raises(ValueError):
        Partition(3, 3)


def test_partitions_are_disjoint_and_make_up_the_single_run(tmp_path: Path, make_config):
    config = make_config(num_dialogues=30)  # 20 seeds: the second pass reuses seeds with new ids
    generate(config, tmp_path / "single")
    parts = tmp_path / "parts"
    for i in range(3):
        manifest = generate(config, parts, Partition(i, 3))
        assert manifest["status"] == "complete"
        assert manifest["num_planned"] == manifest["totals"]["num_dialogues"]
    single, split = rows(tmp_path / "single"), rows(parts)
    assert sorted(r["conversation_id"] for r in split) == sorted(r["conversation_id"] for r in single)
    assert len({r["conversation_index"] for r in split}) == 30
    # The fake engine is deterministic per conversation and turn: partitions change nothing in the dialogues.
    by_id = {r["conversation_id"]: r["messages"] for r in single}
    assert all(by_id[r["conversation_id"]] == r["messages"] for r in split)
    complete, table = report(parts)
    assert complete and "p002of003" in table
    combined = json.loads((parts / "manifest.json").read_text())
    assert combined["status"] == "complete" and combined["totals"]["num_dialogues"] == 30
    assert combined["num_shards"] == len(list(parts.glob("shard-p*.parquet")))
    assert combined["shard_logs"] == [f"shards-p{i:03d}of003.jsonl" for i in range(3)]


def test_status_reports_a_partition_that_never_ran(tmp_path: Path, make_config, capsys):
    config = make_config(num_dialogues=20)
    generate(config, tmp_path / "out", Partition(0, 2))
    assert main(["status", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "p001of002" in out and "missing" in out and "INCOMPLETE" in out
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_partition_resumes_from_its_own_shards(tmp_path: Path, make_config):
    config = make_config(num_dialogues=20)
    out = tmp_path / "out"
    generate(config, out, Partition(1, 2))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-p001*")}
    again = Generation(config, out, partition=Partition(1, 2))
    assert again.num_remaining == 0 and again.num_planned == len(rows(out))
    generate(config, out, Partition(0, 2))  # the other partition does not touch partition 1's files
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-p001*")} == before
    assert report(out)[0]


def test_single_and_partitioned_runs_do_not_mix(tmp_path: Path, make_config):
    config = make_config(num_dialogues=10)
    generate(config, tmp_path / "a")
    with pytest.raises(OutputError, match="single run"):
        Generation(config, tmp_path / "a", partition=Partition(0, 2))
    generate(config, tmp_path / "b", Partition(0, 2))
    with pytest.raises(OutputError, match="2 partitions"):
        Generation(config, tmp_path / "b", partition=Partition(0, 3))
    with pytest.raises(OutputError, match="2 partitions"):
        Generation(config, tmp_path / "b")


def test_cli_checks_partition_flags(tmp_path: Path, make_config, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(make_config().model_dump(mode="json")))
    assert main(["generate", "--config", str(config), "--output", str(tmp_path / "o"), "--num-shards", "2"]) == 2
    assert "--partition-index" in capsys.readouterr().err
    assert main(["generate", "--config", str(config), "--output", str(tmp_path / "o"), "--num-shards", "2",
                 "--shard-index", "2"]) == 2
    assert "0..1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ray_cluster():
    ray = require("ray")
    # Workers import the test's fake engine by name: put tests/ on their path. Nothing leaves this machine.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_workers_match_one_process_and_survive_a_killed_worker(tmp_path: Path, make_config, ray_cluster):
    from interplay.distributed.ray_run import run_on_ray

    config = make_config(num_dialogues=40)
    generate(config, tmp_path / "single")
    out = tmp_path / "ray"
    killed: list[int] = []

    def kill_a_worker_after_the_first_shard() -> None:
        # Runs beside the driver: wait for partition 0's first shard, then SIGKILL one worker's process.
        while not list(out.glob("shard-p000of002-*.parquet")):
            time.sleep(0.05)
        for proc in psutil.process_iter(["cmdline"]):
            # Ray titles an actor's process "ray::PartitionWorker" (".run" while it starts that method).
            if " ".join(proc.info["cmdline"] or []).startswith("ray::PartitionWorker"):
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
                break

    killer = threading.Thread(target=kill_a_worker_after_the_first_shard, daemon=True)
    killer.start()
    complete, table = run_on_ray(config, out, num_workers=2, engines="ray_engines:open_engines")
    killer.join(timeout=60)
    assert killed, "no worker was killed: the test did not exercise a restart"
    assert complete, table
    got = rows(out)
    assert sorted(r["conversation_id"] for r in got) == sorted(r["conversation_id"] for r in rows(tmp_path / "single"))
    assert len(got) == 40  # exactly once, though one worker died mid-run and was restarted
    assert json.loads((out / "manifest.json").read_text())["totals"]["num_dialogues"] == 40
    for tag in ("p000of002", "p001of002"):  # each worker's engine output is in its partition's log, not Ray's
        assert "fake engine started in process" in (out / "logs" / f"engine-{tag}.log").read_text()



@pytest.mark.slow
def test_ray_rerun_after_the_driver_died_resumes(tmp_path: Path, make_config, ray_cluster):
    from interplay.distributed.ray_run import run_on_ray

    config = make_config(num_dialogues=20)
    out = tmp_path / "ray"
    # What a driver killed part-way leaves: one partition finished, the other never started.
    generate(config, out, Partition(0, 2))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-p000of002-*.parquet")}
    complete, table = run_on_ray(config, out, num_workers=2, engines="ray_engines:open_engines")
    assert complete, table
    assert sorted(r["conversation_index"] for r in rows(out)) == list(range(20))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-p000of002-*.parquet")} == before


@pytest.mark.slow
def test_ray_worker_that_always_dies_is_restarted_a_bounded_number_of_times(tmp_path: Path, make_config,
                                                                             ray_cluster):
    from interplay.distributed.ray_run import run_on_ray

    started = time.time()
    complete, table = run_on_ray(make_config(num_dialogues=6), tmp_path / "out", num_workers=1, max_restarts=1,
                                 engines="ray_engines:always_die")
    assert not complete and "partition 0" in table and time.time() - started < 120


@pytest.mark.slow
def test_ray_rerun_keeps_the_partition_count_overwrites_and_reports_input_errors(tmp_path: Path, make_config,
                                                                              ray_cluster):
    from interplay.distributed.ray_run import run_on_ray

    config, out = make_config(num_dialogues=10), tmp_path / "out"
    for i in range(2):
        generate(config, out, Partition(i, 2))
    # No --num-workers: the run already there has 2 partitions, though a CPU cluster's default is 1 worker.
    complete, _ = run_on_ray(config, out, engines="ray_engines:open_engines")
    assert complete and not list(out.glob("*of001*"))
    # A different config inside the workers: the writer's own refusal, unwrapped (exit 2 on the command line).
    other = make_config(num_dialogues=10, seed=123)
    with pytest.raises(OutputError, match="different config"):
        run_on_ray(other, out, engines="ray_engines:open_engines")
    complete, _ = run_on_ray(other, out, engines="ray_engines:open_engines", overwrite=True)
    assert complete and sorted(r["conversation_index"] for r in rows(out)) == list(range(10))
    assert json.loads((out / "manifest-p000of002.json").read_text())["identity"]["config"] == other.hash()
