"""The pieces that keep a million-dialogue run flat: the done bitmap, the shard log, the writer thread with its
bounded queue, and a manifest whose size does not grow with the shards."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import logged
from fake_engine import fake_open_engines, make_clients
from interplay.generator.output import writer as writer_module
from interplay.generator.output.doneset import DoneSet
from interplay.generator.output.shardlog import decode_indices, encode_indices, read_log
from interplay.generator.output.storage import Storage
from interplay.generator.output.writer import CorpusWriter, OutputError
from interplay.generator.runtime.run import Generation


def record(index: int) -> dict:
    return {"conversation_index": index, "conversation_id": f"s{index}", "seed_id": f"s{index}", "messages": [],
            "turns": [], "outcome": "max_turns", "num_turns": 0}


def test_done_set_matches_a_python_set() -> None:
    rng = random.Random(7)
    indices = [rng.randrange(5000) for _ in range(3000)] + [0, 7, 8, 4999]
    done, reference = DoneSet(), set()
    for i in indices:
        done.add(i)
        reference.add(i)
    assert len(done) == len(reference) and set(done) == reference and sorted(done) == list(done)
    assert all((i in done) == (i in reference) for i in range(-3, 5100))
    assert all(done.count_below(n) == sum(1 for i in reference if i < n) for n in (0, 1, 7, 8, 9, 2500, 5000, 9999))
    with pytest.raises(ValueError):
        done.add(-1)


def test_done_set_of_a_million_is_small() -> None:
    done = DoneSet(range(1_000_000))
    assert len(done) == 1_000_000 and done.count_below(1_000_000) == 1_000_000
    assert len(done._bits) <= 1_000_000 // 8 * 2  # bits, not objects (grown by half at most)


def test_indices_round_trip_delta_encoded() -> None:
    indices = [17, 3, 250, 4, 5, 1000]
    assert decode_indices(encode_indices(indices)) == sorted(indices)
    assert encode_indices([]) == [] and decode_indices([]) == []


def test_a_torn_or_garbled_line_marks_the_log_damaged(tmp_path: Path) -> None:
    good = json.dumps({"file": "shard-00000.parquet", "num_rows": 1, "indices": [0]})
    (tmp_path / "a.jsonl").write_text(good + "\n" + good.replace("00000", "00001")[:25])
    entries, damaged = read_log(Storage(tmp_path), "a.jsonl")
    assert damaged and [e["file"] for e in entries] == ["shard-00000.parquet"]
    (tmp_path / "b.jsonl").write_text("not json\n" + good + "\n")
    entries, damaged = read_log(Storage(tmp_path), "b.jsonl")
    assert damaged and len(entries) == 1
    (tmp_path / "c.jsonl").write_text(good + "\n")
    assert read_log(Storage(tmp_path), "c.jsonl") == ([json.loads(good)], False)
    assert read_log(Storage(tmp_path), "absent.jsonl") == ([], False)


def test_the_manifest_does_not_grow_with_the_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "MANIFEST_EVERY_S", 0)
    out = tmp_path / "out"
    writer = CorpusWriter(out, config={"test": True}, config_hash="0" * 16, dialogues_per_shard=1)
    sizes = []
    for i in range(200):
        writer.add(record(i))
        if i in (9, 199):
            writer.flush()
            sizes.append((out / "manifest.json").stat().st_size)
    writer.close(complete=True)
    assert sizes[1] - sizes[0] < 16  # only digits grow: 10 shards or 200, the same manifest
    assert [e["file"] for e in logged(out)] == [f"shard-{i:05d}.parquet" for i in range(200)]
    assert set(CorpusWriter(out, config={"test": True}, config_hash="0" * 16, dialogues_per_shard=1).done) \
        == set(range(200))


def test_run_summaries_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "RUNS_KEPT", 3)
    out = tmp_path / "out"
    for _ in range(5):
        manifest = CorpusWriter(out, config={}, config_hash="0" * 16, dialogues_per_shard=2).close(complete=False)
    assert len(manifest["runs"]) == 3 and manifest["num_runs"] == 5


class SlowStorage(Storage):
    """Publishing a shard takes `delay` seconds, or fails from the `fail_at`-th shard on."""

    def __init__(self, location: Path, delay: float = 0.0, fail_at: int | None = None):
        super().__init__(location)
        self.delay, self.fail_at, self.shards = delay, fail_at, 0

    def write_table_atomic(self, name, table, **kw) -> None:
        self.shards += 1
        if self.fail_at is not None and self.shards >= self.fail_at:
            raise OSError(28, "No space left on device")
        time.sleep(self.delay)
        super().write_table_atomic(name, table, **kw)


def test_a_slow_writer_holds_back_workers_not_the_event_loop(tmp_path: Path) -> None:
    """Shards take 0.2 s each to publish: the loop keeps turning (a 10 ms ticker is never late by a shard's
    time), and a finished conversation waits only once QUEUE_SHARDS shards are waiting."""
    writer = CorpusWriter(SlowStorage(tmp_path / "out", delay=0.2), config={}, config_hash="0" * 16,
                          dialogues_per_shard=1)

    async def main() -> tuple[float, float]:
        worst_lag = 0.0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal worst_lag
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.01)
                worst_lag = max(worst_lag, time.perf_counter() - before - 0.01)

        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        for i in range(writer_module.QUEUE_SHARDS + 3):
            await writer.put(record(i))
        waited = time.perf_counter() - started
        stop.set()
        await tick
        return waited, worst_lag

    waited, worst_lag = asyncio.run(main())
    writer.close(complete=True)
    assert waited >= 0.2  # back-pressure: the queue was full, so the last puts waited for the thread
    assert worst_lag < 0.15  # never a whole shard's publish (0.2 s) on the loop
    assert len(list((tmp_path / "out").glob("shard-*.parquet"))) == writer_module.QUEUE_SHARDS + 3


def test_a_writer_failure_stops_the_run_and_keeps_what_was_written(tmp_path: Path, make_config) -> None:
    config = make_config(num_dialogues=20, dialogues_per_shard=3, max_in_flight=4)
    out = tmp_path / "out"
    generation = Generation(config, out)
    generation.writer.storage = SlowStorage(out, fail_at=3)  # the third shard hits a full disk
    with pytest.raises(OutputError, match="No space left on device.*rerun to resume"):
        asyncio.run(generation.run(fake_open_engines(make_clients())))
    shards = sorted(out.glob("shard-*.parquet"))
    assert [p.name for p in shards] == ["shard-00000.parquet", "shard-00001.parquet"]
    assert [e["file"] for e in logged(out)] == [p.name for p in shards]
    assert all(pq.read_table(p).num_rows == 3 for p in shards)
    assert not list(out.glob(".*.tmp")) and not (out / ".lease.json").exists()
    assert threading.active_count() < 10  # the writer thread ended with the run
    manifest = asyncio.run(Generation(config, out).run(fake_open_engines(make_clients())))
    assert manifest["status"] == "complete" and manifest["totals"]["num_dialogues"] == 20
    indices = sorted(i for p in out.glob("shard-*.parquet") for i in pq.read_table(p)["conversation_index"].to_pylist())
    assert indices == list(range(20))
