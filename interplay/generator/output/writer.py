"""Parquet shards, the shard log and the manifest, with exactly-once resume; the writing off the event loop.

Layout of an output directory (a local path, an s3:// URI, or another URI pyarrow's filesystems accept: see
storage.py and objectstore.py):
    manifest.json            config, identity, totals, one entry per run (the last RUNS_KEPT); a fixed size
    shards.jsonl             one line per finished shard: its rows' indices and stats (shardlog.py)
    failures.jsonl           one line per failed attempt at a conversation not done yet (failures.py)
    shard-00000.parquet ...  finished shards; a shard is written under a temporary name of its writer's own
                             (.shard-00000.parquet.e3-1a2b3c4d5e6f.tmp) and published under the writer's fence
                             (storage.py), so no reader globbing *.parquet ever sees a partial file
    logs/engine.log          vLLM's own log lines (a remote output's: under the cache directory, run.py)
    .layout.json             the output's layout and corpus identity hash, recorded once (layout.py, checks.py)

Resume: the finished shards are the truth, the shard log their record. On open the log is read (one file, not
every shard), shards it does not name are read and logged, and those conversations are done; everything else is
(re)generated. Conversations buffered but not yet in a shard when the process died are generated again, so
each conversation lands in exactly one shard. A conversation that failed is retried by later runs until it has
used max_attempts (failures.py); only then does its error row go into a shard.

Writing: the event loop only buffers rows. A full buffer goes through a bounded queue to one writer thread,
which encodes the Parquet, publishes the shard (fsync and hard link, or an upload), appends its log line and
rewrites the manifest at most every MANIFEST_EVERY_S. So none of that stalls the conversations in flight. When
the thread is QUEUE_SHARDS shards behind, `put` makes the finished conversation's worker wait (back-pressure);
the loop runs on. A failure in the thread stops the run: the next `put` or `close` raises it, and nothing more
is written, so the published shards and their log stay intact and a rerun resumes from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from interplay.common.roles import ROLES
from interplay.generator.output.checks import Ownership, read_manifest
from interplay.generator.output.doneset import DoneSet
from interplay.generator.output.failures import FailureLog
from interplay.generator.output.layout import (  # noqa: F401 (re-exported: readers name them from here)
    FORMAT,
    MANIFEST,
    PARTITION_MANIFEST_RE,
    SHARD_RE,
    OutputError,
    clear_partitions,
    is_interplay_name,
)
from interplay.generator.output.lease import LEASE_TTL_S, Lease, LeaseHeld, LeaseLost, lease_name
from interplay.generator.output.records import SCHEMA, add_stats, empty_stats, merge_stats
from interplay.generator.output.resume import SHARD_HASH_KEY, resume, shard_entry
from interplay.generator.output.shardlog import ShardLog
from interplay.generator.output.storage import Fence, ShardFile, Storage, StoreError, as_storage

ROW_GROUP_ROWS = 1000
CONVERT_ROWS = 16        # rows per slice of the Arrow conversion (see to_table)
QUEUE_SHARDS = 4         # full buffers waiting for the writer thread before `put` waits
MANIFEST_EVERY_S = 10.0  # the manifest's totals lag the shards by at most this while a run goes on
RUNS_KEPT = 100          # run summaries kept in the manifest (num_runs counts them all)
_BACKOFF_S = 0.005       # how often a worker held back by a full queue looks again


def shard_names(out_dir: str | Path | Storage) -> list[str]:
    """Names of all finished shards in the output, every partition's."""
    return [name for name in as_storage(out_dir).names() if SHARD_RE.match(name)]


def shard_files(out_dir: str | Path) -> list[Path] | list[ShardFile]:
    """All finished shards, every partition's, as pq.ParquetFile opens them: local paths, or for a remote output
    files read at their first use."""
    storage = as_storage(out_dir)
    if storage.is_local:
        return [Path(out_dir) / name for name in shard_names(storage)]
    return [storage.source(name) for name in shard_names(storage)]


class CorpusWriter:
    """Buffers finished conversations and writes them as numbered shards from a thread of its own.

    With a partition tag ("p003of008") it owns only that partition's shards, log and manifest, so several
    writers can share one directory.
    """

    def __init__(self, out_dir: str | Path | Storage, *, config: dict[str, Any], config_hash: str,
                 dialogues_per_shard: int, overwrite: bool = False, partition_tag: str | None = None,
                 identity: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                 lease_ttl_s: float = LEASE_TTL_S, lease_wait_s: float = 0.0, max_attempts: int = 1):
        self.storage = as_storage(out_dir)
        self.out_dir = self.storage.location
        self.tag = partition_tag
        self.own = Ownership(self.storage, partition_tag, identity)
        self.manifest_name = self.own.manifest_name
        self.dialogues_per_shard = dialogues_per_shard
        self._buffer: list[dict[str, Any]] = []
        self._opened = self._run_started = time.time()
        self._run_stats = empty_stats()
        self.identity = identity
        self.config_hash = config_hash
        self.run_info: dict[str, Any] = {}  # recorded with this run's summary: runtime settings, versions
        self.lease: Lease | None = None
        # A list: a shard's rows; a dict: a failure line (failures.py); None: the end.
        self._queue: queue.Queue[list[dict[str, Any]] | dict[str, Any] | None] = queue.Queue(maxsize=QUEUE_SHARDS)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._manifest_at = 0.0
        self.manifest = self._open(config, config_hash, overwrite, lease_ttl_s, lease_wait_s)
        self._fence = Fence(self.lease.tag, self._held)
        try:  # a refusal from here on (an unreadable shard at resume, ...) gives the lease back: no writer is kept out
            self.manifest.update(extra or {})
            self.log = ShardLog(self.storage, self.own.log_name, fence=self._fence)
            self.done = self._resume()
            self.failures = FailureLog(self.storage, self.own.failure_log_name, fence=self._fence, done=self.done,
                                       max_attempts=max_attempts)
            self._num_failed = 0  # attempts that failed in this run and are to be retried
            # Written before the first shard, so a directory holding shards always holds a manifest too, and the
            # inputs' fingerprints are on record from the start.
            self.write_manifest()
        except BaseException:
            self.release()
            raise

    # -- opening and resuming ---------------------------------------------------------------------------------

    def _open(self, config: dict[str, Any], config_hash: str, overwrite: bool, ttl_s: float,
              wait_s: float) -> dict[str, Any]:
        storage = self.storage
        try:  # reachable, writable, and able to keep one writer per partition (storage.py, objectstore.py)
            storage.open_for_writing()
        except OSError as e:
            raise self._unwritable(e) from None
        self.own.check(storage.names(), config_hash, overwrite)  # reads only: a refused run changes nothing
        checked = None

        def guard() -> Callable[[], None]:
            # Under the lease lock, the lease free: the check again, then (once the lease is written) the layout
            # record. A writer of another layout or config started at the same moment sees one or the other whole.
            nonlocal checked
            checked = self.own.check(storage.names(), config_hash, overwrite)
            return lambda: self.own.record_layout(checked, config_hash)

        try:  # the lease is the first thing written, and so also the writability probe
            self.lease = Lease.acquire(storage, lease_name(self.tag), ttl_s=ttl_s, wait_s=wait_s, guard=guard)
        except (LeaseHeld, LeaseLost) as e:
            raise OutputError(str(e)) from None
        except OSError as e:
            raise self._unwritable(e) from None
        assert checked is not None
        try:  # every refusal after the lease is taken releases it (and __init__ does the same for its own steps)
            names = storage.names()  # again, now that no other writer of this output or partition can change them
            manifest = checked.manifest
            if overwrite:
                self.own.clear(names)
                manifest = None
            for name in storage.names():
                if self.own.owns_tmp(name):
                    storage.delete(name)
            if manifest is None:
                manifest = {"format": FORMAT, "status": "running", "config_hash": config_hash, "config": config,
                            "runs": []}
            manifest.pop("shards", None)  # earlier versions listed every shard here; the shard log does now
            manifest["config"] = config  # same hash; runtime keys (num_dialogues, max_in_flight) may have changed
            if self.identity is not None:
                manifest["identity"] = self.identity
        except BaseException:
            self.lease.release()
            raise
        return manifest

    def _unwritable(self, e: OSError) -> OutputError:
        return OutputError(f"cannot write to output directory {self.out_dir}: {getattr(e, 'strerror', None) or e}")

    def _resume(self) -> DoneSet:
        state = resume(self.storage, self.own, self.log, self.config_hash)
        self._totals, self._num_shards, self._next_number = state.totals, state.num_shards, state.next_number
        return state.done

    @property
    def num_done(self) -> int:
        return len(self.done)

    def start_clock(self) -> None:
        """Generation starts now: what came before (engine start-up) is reported apart."""
        self._run_started = time.time()

    # -- the event loop's side --------------------------------------------------------------------------------

    async def put(self, record: dict[str, Any]) -> None:
        """Add a finished conversation from the event loop; waits (without blocking the loop) while the
        writer thread is behind."""
        batch = self._take(record)
        while batch is not None and not self._submit(batch, block=False):
            await asyncio.sleep(_BACKOFF_S)

    def add(self, record: dict[str, Any]) -> None:
        """Add a finished conversation; blocks while the writer thread is behind (use `put` on an event loop)."""
        batch = self._take(record)
        if batch is not None:
            self._submit(batch, block=True)

    def _take(self, record: dict[str, Any]) -> list[dict[str, Any]] | dict[str, Any] | None:
        self._raise_if_failed()
        if (failure := self.failures.attempts.settle(record)) is not None:  # not done: a later run retries it
            self._num_failed += 1
            return failure
        self._buffer.append(record)
        self.done.add(record["conversation_index"])
        add_stats(self._run_stats, record)
        if len(self._buffer) < self.dialogues_per_shard:
            return None
        batch, self._buffer = self._buffer, []
        return batch

    def _submit(self, batch: list[dict[str, Any]] | dict[str, Any] | None, *, block: bool) -> bool:
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="interplay-writer", daemon=True)
            self._thread.start()
        try:
            self._queue.put(batch, block=block)
        except queue.Full:
            return False
        return True

    def _raise_if_failed(self) -> None:
        if self._error is None:
            return
        if isinstance(self._error, StoreError):  # the store went away mid-run: what it holds is intact
            raise OutputError(f"{self._error}; the shards written so far are intact: rerun the same command to "
                              "resume once the store answers") from None
        if isinstance(self._error, OutputError):
            raise self._error
        raise OutputError(f"writing to {self.out_dir} failed ({type(self._error).__name__}: {self._error}); "
                          "the shards written so far are intact: fix the cause and rerun to resume") from self._error

    # -- the writer thread ------------------------------------------------------------------------------------

    def _drain(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:  # after a failure, only drain: a waiting `put` must not wait forever
                try:
                    if isinstance(batch, dict):
                        self.failures.append(batch)
                    else:
                        self._write_shard(batch)
                except BaseException as e:  # noqa: BLE001 (handed to the loop by _raise_if_failed)
                    self._error = e

    def _write_shard(self, batch: list[dict[str, Any]]) -> None:
        number, self._next_number = self._next_number, self._next_number + 1
        name = f"shard-{self.tag}-{number:05d}.parquet" if self.tag else f"shard-{number:05d}.parquet"
        try:
            table = to_table(batch)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), SHARD_HASH_KEY: self.config_hash})
            self.storage.write_table_atomic(name, table, row_group_size=ROW_GROUP_ROWS, fence=self._fence)
        except FileExistsError:  # only a second writer could have put it there
            raise OutputError(f"{self.storage.path(name)} appeared while this writer held the output: another "
                              "writer is writing the same partition; stopped without writing") from None
        entry = shard_entry(name, batch)
        self.log.append(entry)
        merge_stats(self._totals, entry)
        self._num_shards += 1
        if time.monotonic() - self._manifest_at >= MANIFEST_EVERY_S:
            self.write_manifest()

    def flush(self) -> None:
        """Write the buffered conversations as a shard, and wait until the thread has written everything."""
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._submit(batch, block=True)
        self._stop_thread()
        self._raise_if_failed()

    def _stop_thread(self) -> None:
        """Let the writer thread finish what is queued (after a failure it only drains), and end it."""
        if self._thread is not None:
            self._submit(None, block=True)
            self._thread.join()
            self._thread = None

    # -- the manifest -----------------------------------------------------------------------------------------

    def write_manifest(self, *, complete: bool = False, extra: dict[str, Any] | None = None) -> None:
        m = self.manifest
        m["status"] = "complete" if complete else "running"
        m["shard_log"], m["num_shards"] = self.log.name, self._num_shards
        m["totals"] = totals([self._totals])
        m["failures"] = self.failures.summary()
        m.update(extra or {})
        self.storage.write_atomic(self.manifest_name, json.dumps(m, indent=2).encode(), fence=self._fence)
        self._manifest_at = time.monotonic()

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """Around every publish: this writer must still hold the output, and keeps it until the block ends (see
        lease.py)."""
        try:
            with self.lease.held():
                yield
        except LeaseLost as e:
            raise OutputError(str(e)) from None

    def run_summary(self) -> dict[str, Any]:
        """Figures for the run in this process (not earlier runs on the same directory)."""
        wall = time.time() - self._run_started
        output = sum(self._run_stats["tokens"][r]["output"] for r in ROLES)
        return {
            "started_at": datetime.fromtimestamp(self._opened, timezone.utc).isoformat(timespec="seconds"),
            "startup_s": round(self._run_started - self._opened, 2),
            "wall_s": round(wall, 2),
            "num_dialogues": self._run_stats["num_rows"],
            "output_tokens": output,
            "dialogues_per_s": round(self._run_stats["num_rows"] / wall, 3) if wall > 0 else 0.0,
            "output_tok_per_s": round(output / wall, 1) if wall > 0 else 0.0,
            "outcomes": self._run_stats["outcomes"],
            "num_failed_to_retry": self._num_failed,
            **self.run_info,
        }

    def close(self, *, complete: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the buffer, record this run and write the manifest; `complete` once every conversation is done.
        After a writer failure nothing more is written, and the failure is raised."""
        try:
            if self._error is None:
                self.flush()
            self._stop_thread()
            self._raise_if_failed()
            self.log.flush()
            self.failures.flush()
            m = self.manifest
            m["num_runs"] = m.get("num_runs", len(m["runs"])) + 1
            m["runs"] = [*m["runs"][-(RUNS_KEPT - 1):], self.run_summary()]
            self.write_manifest(complete=complete, extra=extra)
        finally:
            self.release()
        return self.manifest

    def release(self) -> None:
        """Give the output up to the next writer (close does it; a writer dropped without close leaves a lease
        that the next writer takes over as stale)."""
        if self.lease is not None:
            self.lease.release()


def to_table(records: list[dict[str, Any]]) -> pa.Table:
    """Rows to Arrow in slices: converting Python objects holds the GIL (a 1000-row shard for ~25 ms, the event
    loop's thread waiting all that time); between slices the interpreter hands the GIL over."""
    return pa.concat_tables([pa.Table.from_pylist(records[i:i + CONVERT_ROWS], schema=SCHEMA)
                             for i in range(0, len(records), CONVERT_ROWS)])


def totals(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's totals: sums of shard (or partition) stats, with each role's cached share of prompts."""
    total = empty_stats()
    for part in parts:
        merge_stats(total, part)
    total["cached_prompt_share"] = {
        role: round(t["cached"] / t["prompt"], 4) if t["prompt"] else 0.0 for role, t in total["tokens"].items()}
    total["num_dialogues"] = total.pop("num_rows")
    return total


__all__ = ["CorpusWriter", "OutputError", "as_storage", "read_manifest", "shard_entry", "shard_files",
           "shard_names", "totals"]
