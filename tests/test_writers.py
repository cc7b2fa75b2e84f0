"""One writer per output partition, and --overwrite that deletes only its own files.

The fault matrix for concurrent writers: two writers started together, a second writer refused naming the
holder, a stale lease taken over (dead holder, expired heartbeat), a superseded writer fenced off before it can
publish, --overwrite of partition 0 while partition 1 writes, report then overwrite, and `interplay status`
checking the files behind the manifests. Writers in other processes are tests/writer_runner.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fake_engine import fake_open_engines, make_clients
from interplay.common.partition import Partition
from interplay.distributed.status import report
from interplay.generator.output.lease import Lease, LeaseHeld, is_stale
from interplay.generator.output.storage import Storage
from interplay.generator.output.writer import CorpusWriter, OutputError, clear_partitions
from interplay.generator.runtime.run import Generation

RUNNER = Path(__file__).with_name("writer_runner.py")


def indices(out: Path) -> list[int]:
    return sorted(i for p in out.glob("*.parquet") for i in pq.read_table(p).column("conversation_index").to_pylist())


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}


def generate(config, out: Path, *, partition: Partition | None = None, overwrite: bool = False) -> dict:
    generation = Generation(config, out, partition=partition, overwrite=overwrite)
    return asyncio.run(generation.run(fake_open_engines(make_clients())))


def start(config, out: Path, *args: str) -> subprocess.Popen:
    path = out.parent / "config.json"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNNER.parent), *sys.path])}
    return subprocess.Popen([sys.executable, str(RUNNER), str(path), str(out), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def holding(config, out: Path, *args: str) -> subprocess.Popen:
    """A live writer in another process that has opened `out` and holds its lease."""
    proc = start(config, out, "--hold", *args)
    line = proc.stdout.readline()
    assert line.startswith("opened"), proc.stderr.read()
    return proc


def test_a_second_writer_is_refused_naming_the_holder_then_takes_over_once_it_died(tmp_path, make_config):
    config, out = make_config(num_dialogues=10), tmp_path / "out"
    generate(make_config(num_dialogues=5), out)
    holder = holding(config, out)
    try:
        before = digests(out)
        with pytest.raises(OutputError, match=f"pid {holder.pid} on host {socket.gethostname()}"):
            Generation(config, out)
        with pytest.raises(OutputError, match="another writer holds"):  # --overwrite deletes nothing then
            Generation(config, out, overwrite=True)
        assert digests(out) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    manifest = generate(config, out)  # the holder is dead: its lease is stale at once
    assert manifest["status"] == "complete" and indices(out) == list(range(10))


def test_two_writers_started_together_give_the_corpus_exactly_once(tmp_path, make_config):
    config, out = make_config(num_dialogues=20, max_in_flight=2), tmp_path / "out"
    procs = [start(config, out, "--delay", "0.02") for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 3]), results  # the second either was refused or found the corpus complete
    if codes == [0, 3]:
        [why] = [err for code, err in results if code == 3]
        assert "another writer holds" in why and "pid" in why
    assert indices(out) == list(range(20))


def test_a_superseded_writer_is_fenced_before_it_publishes(tmp_path, make_config):
    """A zombie (a paused writer, a Ray actor's old self) whose lease was taken over cannot write a shard or the
    manifest any more: its publish fails and nothing of it appears."""
    out = tmp_path / "out"
    config = make_config(num_dialogues=10).model_dump(mode="json")
    old = CorpusWriter(out, config=config, config_hash="h" * 16, dialogues_per_shard=2)
    new = CorpusWriter(out, config=config, config_hash="h" * 16, dialogues_per_shard=2)  # takes over
    assert new.lease.record["epoch"] == old.lease.record["epoch"] + 1
    record = {"conversation_index": 0, "conversation_id": "s00", "seed_id": "s00", "messages": [], "turns": [],
              "outcome": "error", "num_turns": 0}
    old.add(record)
    old.add({**record, "conversation_index": 1})  # a full shard, handed to the writer thread
    with pytest.raises(OutputError, match="no longer holds"):
        old.flush()  # the thread's failure comes back to the caller
    with pytest.raises(OutputError, match="no longer holds"):
        old.add({**record, "conversation_index": 2})  # and every later call stops on it
    with pytest.raises(OutputError, match="no longer holds"):
        old.write_manifest()
    assert list(out.glob("*.parquet")) == [] and not list(out.glob(".*.tmp"))
    new.close(complete=False)
    assert not (out / ".lease.json").exists()  # released


def test_stale_leases(tmp_path):
    storage = Storage(tmp_path)
    now = time.time()
    other = {"owner": "x", "host": "elsewhere", "pid": 1, "epoch": 4, "heartbeat_at": now, "ttl_s": 60}
    assert not is_stale(other, now=now) and is_stale(other, now=now + 61)  # another host: only the heartbeat
    here = {**other, "host": socket.gethostname()}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert is_stale({**here, "pid": dead.pid}) and not is_stale({**here, "pid": 1})
    (tmp_path / ".lease.json").write_text(json.dumps(other))
    with pytest.raises(LeaseHeld, match="host elsewhere"):
        Lease.acquire(storage, ".lease.json", heartbeat=False)
    (tmp_path / ".lease.json").write_text(json.dumps({**other, "heartbeat_at": now - 120}))
    lease = Lease.acquire(storage, ".lease.json", heartbeat=False)  # expired: taken over, epoch raised
    assert lease.record["epoch"] == 5 and lease.record["pid"] == os.getpid()


def test_heartbeat_keeps_a_lease_fresh(tmp_path):
    lease = Lease.acquire(Storage(tmp_path), ".lease.json", ttl_s=0.4)
    first = json.loads((tmp_path / ".lease.json").read_text())["heartbeat_at"]
    time.sleep(0.5)
    current = json.loads((tmp_path / ".lease.json").read_text())
    assert current["heartbeat_at"] > first and not is_stale({**current, "pid": 1})
    lease.release()


def test_overwrite_of_partition_0_while_partition_1_writes(tmp_path, make_config):
    config, out = make_config(num_dialogues=20), tmp_path / "out"
    generate(config, out, partition=Partition(0, 2))
    generate(config, out, partition=Partition(1, 2))
    assert report(out)[0]
    (out / "manifest-p001of002.json").unlink()  # partition 1 starts over from its shards ...
    writer1 = holding(config, out, "--partition", "1", "2")  # ... and is being written now
    try:
        theirs = {n: d for n, d in digests(out).items() if "p001" in n}
        manifest = generate(config, out, partition=Partition(0, 2), overwrite=True)
        assert manifest["status"] == "complete" and len(manifest["runs"]) == 1  # partition 0 started over
        assert {n: d for n, d in digests(out).items() if "p001" in n} == theirs  # partition 1 untouched
        assert not (out / "manifest.json").exists()  # the combined manifest no longer described the corpus
    finally:
        writer1.send_signal(signal.SIGKILL)
        writer1.wait()
    generate(config, out, partition=Partition(1, 2))
    complete, _ = report(out)
    assert complete and indices(out) == list(range(20))


def test_report_then_overwrite_keeps_the_report_and_replaces_the_corpus(tmp_path, make_config):
    out = tmp_path / "out"
    generate(make_config(num_dialogues=6), out)
    (out / "report").mkdir()
    (out / "report" / "report.md").write_text("mine")
    (out / "notes.txt").write_text("mine too")
    other = make_config(num_dialogues=6, conversation={"max_turns": 4})
    manifest = generate(other, out, overwrite=True)
    assert manifest["status"] == "complete" and manifest["identity"]["config"] == other.hash()
    assert indices(out) == list(range(6))
    assert (out / "report" / "report.md").read_text() == "mine" and (out / "notes.txt").read_text() == "mine too"


def test_overwrite_never_deletes_another_layout(tmp_path, make_config):
    config, out = make_config(num_dialogues=6), tmp_path / "out"
    generate(config, out)
    before = digests(out)
    with pytest.raises(OutputError, match="a single run"):
        Generation(config, out, partition=Partition(0, 2), overwrite=True)
    with pytest.raises(OutputError, match="another layout"):
        clear_partitions(out, 2)
    assert digests(out) == before


def test_ray_overwrite_clears_every_partition_unless_one_is_held(tmp_path, make_config):
    config, out = make_config(num_dialogues=10), tmp_path / "out"
    for i in range(2):
        generate(config, out, partition=Partition(i, 2))
    report(out)
    (out / "notes.txt").write_text("kept")
    holder = holding(config, out, "--partition", "1", "2")
    try:
        before = digests(out)
        with pytest.raises(OutputError, match="refused: another writer holds"):
            clear_partitions(out, 2)
        assert digests(out) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    clear_partitions(out, 2)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["notes.txt"]


def test_status_checks_the_files_behind_the_manifests(tmp_path, make_config):
    config, out = make_config(num_dialogues=10), tmp_path / "out"
    for i in range(2):
        generate(config, out, partition=Partition(i, 2))
    assert report(out)[0]
    next(out.glob("shard-p001of002-*.parquet")).unlink()
    complete, table = report(out)
    assert not complete and "damaged" in table and "is missing" in table


def test_a_shard_is_never_published_over_an_existing_one(tmp_path):
    storage = Storage(tmp_path)
    storage.write_table_atomic("shard-00000.parquet", pa.table({"x": [1]}), row_group_size=10)
    before = (tmp_path / "shard-00000.parquet").read_bytes()
    with pytest.raises(FileExistsError):
        storage.write_table_atomic("shard-00000.parquet", pa.table({"x": [2]}), row_group_size=10)
    assert (tmp_path / "shard-00000.parquet").read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_a_lease_deleted_by_hand_stops_the_writer_at_its_next_publish(tmp_path, make_config):
    out = tmp_path / "out"
    writer = CorpusWriter(out, config=make_config(num_dialogues=10).model_dump(mode="json"), config_hash="h" * 16,
                          dialogues_per_shard=1)
    (out / ".lease.json").unlink()
    record = {"conversation_index": 0, "conversation_id": "s00", "seed_id": "s00", "messages": [], "turns": [],
              "outcome": "max_turns", "num_turns": 0}
    writer.add(record)  # a full shard, handed to the writer thread
    with pytest.raises(OutputError, match="no longer holds"):
        writer.flush()
    assert list(out.glob("*.parquet")) == []
