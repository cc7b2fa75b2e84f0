"""Parquet shards and the manifest, with exactly-once resume.

Layout of an output directory (a local path, or any URI pyarrow's filesystems accept: see storage.py):
    manifest.json            config + hash, shards with row counts and stats, totals, one entry per run
    shard-00000.parquet ...  finished shards; a shard is written as .shard-NNNNN.parquet.tmp and renamed into
                             place, so no reader globbing *.parquet ever sees a partial file
    logs/engine.log          vLLM's own log lines

Resume: the finished shards are the truth. On open, every shard's `conversation_index` column is read; those
conversations are done, everything else is (re)generated. Conversations buffered but not yet in a shard when
the process died are simply generated again, so each conversation lands in exactly one shard.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from interplay.common.roles import ROLES
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
from interplay.generator.output.storage import Storage

ROW_GROUP_ROWS = 1000


def as_storage(out_dir: str | Path | Storage) -> Storage:
    return out_dir if isinstance(out_dir, Storage) else Storage(out_dir)


def read_manifest(out_dir: str | Path | Storage, name: str = MANIFEST) -> dict[str, Any] | None:
    storage = as_storage(out_dir)
    try:
        data = storage.read_bytes(name)
        return None if data is None else json.loads(data)
    except (OSError, ValueError) as e:
        raise OutputError(f"{storage.path(name)} is unreadable ({e}); move it away to start over") from None


def shard_names(out_dir: str | Path | Storage) -> list[str]:
    """Names of all finished shards in the output, every partition's."""
    return [name for name in as_storage(out_dir).names() if SHARD_RE.match(name)]


def shard_files(out_dir: str | Path) -> list[Path]:
    """Local paths of all finished shards, every partition's."""
    return [Path(out_dir) / name for name in shard_names(out_dir)]


def _stats_from_file(storage: Storage, name: str) -> dict[str, Any]:
    stats = empty_stats()
    for record in storage.read_table(name, columns=["outcome", "turns"]).to_pylist():
        add_stats(stats, record)
    return stats


class CorpusWriter:
    """Buffers finished conversations and writes them as numbered shards; keeps the manifest current.

    With a partition tag ("p003of008") it owns only that partition's shards and manifest, so several writers can
    share one directory.
    """

    def __init__(self, out_dir: str | Path | Storage, *, config: dict[str, Any], config_hash: str,
                 dialogues_per_shard: int, overwrite: bool = False, partition_tag: str | None = None,
                 identity: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                 lease_ttl_s: float = LEASE_TTL_S, lease_wait_s: float = 0.0):
        self.storage = as_storage(out_dir)
        self.out_dir = self.storage.location
        self.tag = partition_tag
        self.manifest_name = MANIFEST if partition_tag is None else f"manifest-{partition_tag}.json"
        self.dialogues_per_shard = dialogues_per_shard
        self._buffer: list[dict[str, Any]] = []
        self._opened = self._run_started = time.time()
        self._run_stats = empty_stats()
        self.identity = identity
        self.run_info: dict[str, Any] = {}  # recorded with this run's summary: runtime settings, versions
        self.lease: Lease | None = None
        self.manifest = self._open(config, config_hash, overwrite, lease_ttl_s, lease_wait_s)
        self.manifest.update(extra or {})
        self.done = self._scan_done()
        # Written before the first shard, so a directory holding shards always holds a manifest too, and the
        # inputs' fingerprints are on record from the start.
        self.write_manifest()

    # -- opening and resuming ---------------------------------------------------------------------------------

    def _open(self, config: dict[str, Any], config_hash: str, overwrite: bool, ttl_s: float,
              wait_s: float) -> dict[str, Any]:
        storage = self.storage
        try:
            storage.makedirs()
        except OSError as e:
            raise self._unwritable(e) from None
        # Every check reads only: a refused run leaves the directory exactly as it was.
        self._check(storage.names(), config_hash, overwrite)
        try:  # the lease is the first thing written, and so also the writability probe
            self.lease = Lease.acquire(storage, lease_name(self.tag), ttl_s=ttl_s, wait_s=wait_s)
        except (LeaseHeld, LeaseLost) as e:
            raise OutputError(str(e)) from None
        except OSError as e:
            raise self._unwritable(e) from None
        try:
            names = storage.names()  # again, now that no other writer can change them
            manifest = self._check(names, config_hash, overwrite)
            if overwrite:
                self._clear(names)
                manifest = None
            for name in storage.names():  # our partial files of a killed run: never part of the corpus
                if name.startswith(".") and name.endswith(".tmp") and self._owns(name[1:].removesuffix(".tmp")):
                    storage.delete(name)
        except BaseException:
            self.lease.release()
            raise
        if manifest is None:
            manifest = {"format": FORMAT, "status": "running", "config_hash": config_hash, "config": config,
                        "shards": [], "runs": []}
        manifest["status"] = "running"
        manifest["config"] = config  # same hash; runtime keys (num_dialogues, max_in_flight) may have changed
        if self.identity is not None:
            manifest["identity"] = self.identity
        return manifest

    def _unwritable(self, e: OSError) -> OutputError:
        return OutputError(f"cannot write to output directory {self.out_dir}: {getattr(e, 'strerror', None) or e}")

    def _check(self, names: list[str], config_hash: str, overwrite: bool) -> dict[str, Any] | None:
        """Refuse an output this run may not write to; returns this writer's own manifest, if any."""
        storage = self.storage
        self._check_layout(names)
        manifest = read_manifest(storage, self.manifest_name)
        # The combined manifest of a partitioned run is derived from the partitions' (interplay status writes
        # it): an overwrite of one partition makes it wrong, and deletes it.
        derived = MANIFEST if self.tag is not None else None
        others = {n: read_manifest(storage, n) for n in names
                  if (n == MANIFEST or PARTITION_MANIFEST_RE.match(n)) and n != self.manifest_name}
        foreign = [n for n in names if not is_interplay_name(n)]
        if manifest is None and not others and foreign:
            raise OutputError(f"{self.out_dir} is not empty and holds no {MANIFEST} ({', '.join(foreign[:3])}): "
                              "choose an empty or new directory; --overwrite deletes only interplay's own files")
        if manifest is not None and not overwrite and manifest.get("config_hash") != config_hash:
            raise OutputError(f"{self.out_dir} holds a run with a different config ({self._differs(manifest)}); "
                              "use another --output, or --overwrite to delete it (its shards and manifest) "
                              "and start over")
        for name, other in others.items():
            if other is not None and other.get("config_hash") != config_hash and not (overwrite and name == derived):
                raise OutputError(
                    f"{self.out_dir} holds {name} of a run with a different config ({self._differs(other)}); "
                    "--overwrite deletes only this partition's own files: use another --output, or delete the "
                    "old run (`--ray --overwrite` replaces every partition)")
        return manifest

    def _differs(self, other: dict[str, Any]) -> str:
        """Which parts of the corpus identity differ, when both sides recorded one."""
        theirs, mine = other.get("identity"), self.identity
        if not isinstance(theirs, dict) or mine is None:
            return f"hash {other.get('config_hash')}"
        keys = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
        return "differs in: " + ", ".join(keys) if keys else f"hash {other.get('config_hash')}"

    def _owns(self, name: str) -> bool:
        """Is `name` one of this writer's shards or its manifest?"""
        match = SHARD_RE.match(name)
        return name == self.manifest_name or (match is not None and match.group(1) == self.tag)

    def _check_layout(self, names: list[str]) -> None:
        # A single run and a partitioned one, or two partition counts, in one directory would each miss the
        # other's conversations and generate them again: refuse. --overwrite does not help: it deletes only
        # this run's own files.
        tags = {m.group(1) for n in names if (m := SHARD_RE.match(n))}
        tags |= {m.group(1) for n in names if (m := PARTITION_MANIFEST_RE.match(n))}
        counts = {t.split("of")[1] if t else None for t in tags}
        mine = self.tag.split("of")[1] if self.tag else None
        if counts - {mine}:
            layout = ", ".join(sorted("a single run" if c is None else f"{int(c)} partitions" for c in counts))
            raise OutputError(f"{self.out_dir} holds shards of {layout}; this run is "
                              + ("a single run" if mine is None else f"{int(mine)} partitions")
                              + ": use the same layout, or another --output")

    def _clear(self, names: list[str]) -> None:
        # Only this writer's own files (and, for a partition, the combined manifest derived from it). Manifests
        # last: a kill half-way leaves a directory that still names its config.
        for name in sorted(names, key=lambda n: n.startswith("manifest")):
            if self._owns(name) or (self.tag is not None and name == MANIFEST) or (
                    name.startswith(".") and name.endswith(".tmp") and self._owns(name[1:].removesuffix(".tmp"))):
                self.storage.delete(name)

    def _scan_done(self) -> set[int]:
        """Read the finished shards: which conversations are done, and per-shard stats for the manifest."""
        known = {s["file"]: s for s in self.manifest["shards"]}
        shards, done = [], set()
        for name in (n for n in shard_names(self.storage) if self._owns(n)):
            try:
                indices = self.storage.read_table(name, ["conversation_index"]).column(0).to_pylist()
            except (OSError, pa.ArrowException) as e:  # never one of ours (they are renamed in complete)
                raise OutputError(f"{self.storage.path(name)} is not a readable shard ({' '.join(str(e).split())[:200]}); move it "
                                  "away and rerun: its conversations are generated again") from None
            done.update(indices)
            # A shard renamed into place just before a crash may be missing from the manifest: recount it.
            entry = known.get(name) or {"file": name, **_stats_from_file(self.storage, name)}
            shards.append(entry)
        self.manifest["shards"] = shards
        return done

    @property
    def num_done(self) -> int:
        return len(self.done)

    def start_clock(self) -> None:
        """Generation starts now: what came before (engine start-up) is reported apart."""
        self._run_started = time.time()

    # -- writing ----------------------------------------------------------------------------------------------

    def add(self, record: dict[str, Any]) -> None:
        self._buffer.append(record)
        self.done.add(record["conversation_index"])
        add_stats(self._run_stats, record)
        if len(self._buffer) >= self.dialogues_per_shard:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        number = max((int(SHARD_RE.match(s["file"]).group(2)) for s in self.manifest["shards"]), default=-1) + 1
        name = f"shard-{self.tag}-{number:05d}.parquet" if self.tag else f"shard-{number:05d}.parquet"
        try:
            self.storage.write_table_atomic(name, pa.Table.from_pylist(self._buffer, schema=SCHEMA),
                                            row_group_size=ROW_GROUP_ROWS, fence=self._fence)
        except FileExistsError:  # only a second writer could have put it there
            raise OutputError(f"{self.storage.path(name)} appeared while this writer held the output: another "
                              "writer is writing the same partition; stopped without writing") from None
        stats = empty_stats()
        for record in self._buffer:
            add_stats(stats, record)
        self.manifest["shards"].append({"file": name, **stats})
        self._buffer.clear()
        self.write_manifest()

    def write_manifest(self, *, complete: bool = False, extra: dict[str, Any] | None = None) -> None:
        m = self.manifest
        m["status"] = "complete" if complete else "running"
        m["totals"] = totals(m["shards"])
        m.update(extra or {})
        self.storage.write_atomic(self.manifest_name, json.dumps(m, indent=2).encode(), fence=self._fence)

    def _fence(self) -> None:
        """Just before anything is published: this writer must still hold the output (see lease.py)."""
        if self.lease is not None:
            try:
                self.lease.check()
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
            **self.run_info,
        }

    def close(self, *, complete: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Flush the buffer, record this run and write the manifest; `complete` once every conversation is done."""
        try:
            self.flush()
            self.manifest["runs"].append(self.run_summary())
            self.write_manifest(complete=complete, extra=extra)
        finally:
            self.release()
        return self.manifest

    def release(self) -> None:
        """Give the output up to the next writer (close does it; a writer dropped without close leaves a lease
        that the next writer takes over as stale)."""
        if self.lease is not None:
            self.lease.release()


def totals(shards: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total = empty_stats()
    for shard in shards:
        merge_stats(total, shard)
    total["cached_prompt_share"] = {
        role: round(t["cached"] / t["prompt"], 4) if t["prompt"] else 0.0 for role, t in total["tokens"].items()}
    total["num_dialogues"] = total.pop("num_rows")
    return total
