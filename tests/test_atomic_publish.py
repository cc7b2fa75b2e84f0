"""Atomic publish: a paused writer cannot publish after its successor took over, and a failed cleanup never hides
why a publish failed.

The incident: a writer paused after its fence check (SIGSTOP, a VM migrated) woke up after a successor had taken
its stale lease, and renamed the successor's half-written temporary file (both used the same name) into place
as shard-00000.parquet: readers failed with ArrowInvalid. Now each writer's temporary names carry its lease
epoch and owner, and the fence check and the publish (a hard link, which never replaces a file) happen together
under the lease lock (storage.py, lease.py). Writers in other processes are tests/writer_runner.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from interplay.generator.output.lease import Lease
from interplay.generator.output.storage import Storage, tmp_name, tmp_target
from interplay.generator.output.writer import CorpusWriter, OutputError

RUNNER = Path(__file__).with_name("writer_runner.py")
TTL_S = 1.0  # the paused writer's lease: stale this long after its last heartbeat


def start(config, out: Path, *args: str) -> subprocess.Popen:
    path = out.parent / "config.json"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNNER.parent), *sys.path])}
    return subprocess.Popen([sys.executable, str(RUNNER), str(path), str(out), *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_at_pause(proc: subprocess.Popen) -> tuple[int, int]:
    """SIGSTOP the runner while its writer thread waits at its --pause-at point; (lease pid, lease epoch) it saw
    there. The line that lets the thread go on is written now and read only once SIGCONT wakes the process."""
    for line in proc.stdout:
        if line.startswith("paused "):
            break
    else:
        raise AssertionError(f"the pause point was not reached (exit {proc.wait()}): {proc.stderr.read()}")
    proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while not all(stat.read_text().rsplit(")", 1)[1].split()[0] == "T"
                  for stat in Path(f"/proc/{proc.pid}/task").glob("*/stat")):
        assert time.monotonic() < deadline, "the runner did not stop"
        time.sleep(0.01)
    proc.stdin.write("go on\n")
    proc.stdin.flush()
    pid, epoch = line.split()[1:]
    return int(pid), int(epoch)


def lease(out: Path) -> dict:
    return json.loads((out / ".lease.json").read_text())


def shard_tmps(out: Path) -> list[Path]:
    return sorted(out.glob(".shard-*.tmp"))


def test_a_writer_paused_before_its_publish_publishes_nothing_after_a_takeover(tmp_path, make_config):
    config, out = make_config(num_dialogues=10, dialogues_per_shard=5, max_in_flight=2), tmp_path / "out"
    old = start(config, out, "--lease-ttl", str(TTL_S), "--pause-at", "shard-fsync")
    new = None
    try:
        # Stopped with its first shard complete under its temporary name, the lease still its own, nothing
        # published: between the fence (it still holds the output) and the publish.
        assert stop_at_pause(old) == (old.pid, 1) and lease(out)["pid"] == old.pid
        [old_tmp] = shard_tmps(out)
        assert pq.read_table(old_tmp).num_rows == 5 and not list(out.glob("*.parquet"))
        old_inode = old_tmp.stat().st_ino
        time.sleep(TTL_S + 0.5)  # its heartbeat is paused too: the lease goes stale

        # The successor takes the lease over (clearing the stopped writer's temporary file, as a killed run's) and
        # is stopped half-way through writing the same shard number.
        new = start(config, out, "--pause-at", "mid-shard-write")
        assert stop_at_pause(new) == (new.pid, 2)
        [new_tmp] = shard_tmps(out)
        assert new_tmp.stat().st_ino != old_inode  # so the stopped writer's own cleanup will find nothing to delete
        partial = new_tmp.read_bytes()
        assert len(partial) > 4 and not list(out.glob("*.parquet"))

        # The stopped writer wakes: its publish is fenced, and it says why (not that its temporary file was gone).
        old.send_signal(signal.SIGCONT)
        assert old.wait(timeout=60) == 3
        assert "no longer holds" in old.stderr.read()
        for published in out.glob("*.parquet"):
            pq.read_metadata(published)  # before the fix: ArrowInvalid, the successor's half-written file published
        assert not list(out.glob("*.parquet"))  # nothing published over or beside the successor's shards
        assert new_tmp.read_bytes() == partial  # and the successor's temporary file untouched

        new.send_signal(signal.SIGCONT)
        assert new.wait(timeout=120) == 0, new.stderr.read()
    finally:
        for proc in (old, new):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    indices = sorted(i for p in out.glob("*.parquet")
                     for i in pq.read_table(p).column("conversation_index").to_pylist())
    assert indices == list(range(10))
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert not list(out.glob(".*.tmp"))


def record(index: int) -> dict:
    return {"conversation_index": index, "conversation_id": f"s{index:02d}", "seed_id": f"s{index:02d}",
            "messages": [], "turns": [], "outcome": "max_turns", "num_turns": 0}


def writer(out: Path, **kw) -> CorpusWriter:
    return CorpusWriter(out, config={}, config_hash="h" * 16, dialogues_per_shard=2, **kw)


def test_a_failed_cleanup_does_not_mask_why_the_publish_failed(tmp_path, monkeypatch):
    """A successor clears the superseded writer's temporary file while that writer is between writing it and
    publishing it; the superseded writer's publish is fenced, and deleting its temporary file then fails. The error
    reported is the lost lease, not the failed delete."""
    out = tmp_path / "out"
    old = writer(out)
    successor: list[CorpusWriter] = []
    close = pq.ParquetWriter.close

    def close_then_taken_over(self) -> None:
        close(self)
        if not successor:
            successor.append(writer(out))  # this process's older writer is superseded at once; clears its files
    monkeypatch.setattr(pq.ParquetWriter, "close", close_then_taken_over)
    old.add(record(0))
    old.add(record(1))  # a full shard, handed to the writer thread
    with pytest.raises(OutputError, match="no longer holds") as caught:
        old.flush()
    assert "FileNotFoundError" not in str(caught.value)
    assert not list(out.glob("*.parquet")) and not list(out.glob(".*.tmp"))
    successor[0].close(complete=False)


def test_a_takeover_waits_for_a_publish_under_way(tmp_path, monkeypatch):
    """The fence check and the publish hold the lease lock together: a successor cannot take the lease between
    them, so a writer paused there publishes a shard it still owned, and the successor then finds it."""
    out = tmp_path / "out"
    old = writer(out)
    taking: list[threading.Thread] = []
    successor: list[CorpusWriter] = []
    publish = Storage._publish

    def publish_while_a_successor_starts(self, tmp, name, **kw):
        if name.startswith("shard-") and not taking:
            taking.append(threading.Thread(target=lambda: successor.append(writer(out))))
            taking[0].start()
            taking[0].join(timeout=0.5)
            assert taking[0].is_alive(), "the successor took the lease between the fence check and the publish"
            publish(self, tmp, name, **kw)
            published.append(name)
            return
        publish(self, tmp, name, **kw)

    @contextlib.contextmanager
    def held_once_the_successor_took_over(self):
        # The old writer's next fenced step (its log line) waits until the successor has the lease: otherwise which
        # of the two gets the lock first is up to the scheduler, and on a loaded machine the old one often does.
        if published and threading.current_thread() is not taking[0]:
            taking[0].join(timeout=30)
        with held(self):
            yield

    published: list[str] = []
    held = Lease.held
    monkeypatch.setattr(Storage, "_publish", publish_while_a_successor_starts)
    monkeypatch.setattr(Lease, "held", held_once_the_successor_took_over)
    old.add(record(0))
    old.add(record(1))
    with pytest.raises(OutputError, match="no longer holds"):
        old.flush()  # the shard is published; the next publish (its log line or later) is fenced
        old.write_manifest()
    taking[0].join(timeout=30)
    [new] = successor
    assert new.lease.record["epoch"] == 2  # it took over, after the publish: it found the shard
    assert sorted(new.done) == [0, 1] and [p.name for p in out.glob("*.parquet")] == ["shard-00000.parquet"]
    new.close(complete=False)


def test_temporary_names():
    name = tmp_name("shard-00000.parquet", "e3-1a2b3c4d5e6f")
    assert name == ".shard-00000.parquet.e3-1a2b3c4d5e6f.tmp" and tmp_target(name) == "shard-00000.parquet"
    assert tmp_name("manifest.json") != tmp_name("manifest.json")  # no writer: a random tag, never shared
    assert tmp_target(".shard-00000.parquet.tmp") == "shard-00000.parquet"  # an earlier version's leftover
    assert tmp_target("shard-00000.parquet") is None
