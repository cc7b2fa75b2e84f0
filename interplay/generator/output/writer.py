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
import re
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from interplay.common.roles import ROLES
from interplay.generator.output.records import SCHEMA, add_stats, empty_stats, merge_stats
from interplay.generator.output.storage import Storage

FORMAT = "interplay.corpus/1"
MANIFEST = "manifest.json"
# shard-00000.parquet for a single run; shard-p003of008-00000.parquet for partition 3 of 8 of a partitioned run.
SHARD_RE = re.compile(r"^shard-(?:(p\d{3,}of\d{3,})-)?(\d{5,})\.parquet$")
PARTITION_MANIFEST_RE = re.compile(r"^manifest-(p\d{3,}of\d{3,})\.json$")
ROW_GROUP_ROWS = 1000


class OutputError(Exception):
    """The output directory cannot be used for this run; the message says why and what to do."""


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
                 dialogues_per_shard: int, overwrite: bool = False, partition_tag: str | None = None):
        self.storage = as_storage(out_dir)
        self.out_dir = self.storage.location
        self.tag = partition_tag
        self.manifest_name = MANIFEST if partition_tag is None else f"manifest-{partition_tag}.json"
        self.dialogues_per_shard = dialogues_per_shard
        self._buffer: list[dict[str, Any]] = []
        self._opened = self._run_started = time.time()
        self._run_stats = empty_stats()
        self.manifest = self._open(config, config_hash, overwrite)
        self.done = self._scan_done()
        # Written before the first shard, so a directory holding shards always holds a manifest too.
        self.write_manifest()

    # -- opening and resuming ---------------------------------------------------------------------------------

    def _open(self, config: dict[str, Any], config_hash: str, overwrite: bool) -> dict[str, Any]:
        storage = self.storage
        try:
            storage.makedirs()
            storage.write_atomic(".write-test", b"")
            storage.delete(".write-test")
        except OSError as e:
            raise OutputError(f"cannot write to output directory {self.out_dir}: "
                              f"{getattr(e, 'strerror', None) or e}") from None
        if overwrite:
            self._clear()
        names = storage.names()
        self._check_layout(names)
        manifest = read_manifest(storage, self.manifest_name)
        others = [read_manifest(storage, n) for n in names
                  if (n == MANIFEST or PARTITION_MANIFEST_RE.match(n)) and n != self.manifest_name]
        if manifest is None and not others and any(n != "logs" and not n.endswith(".tmp") for n in names):
            raise OutputError(f"{self.out_dir} is not empty and holds no {MANIFEST}: choose an empty or new "
                              "directory (or pass --overwrite to delete interplay files there)")
        for other in [manifest, *others]:
            if other is not None and other.get("config_hash") != config_hash:
                raise OutputError(
                    f"{self.out_dir} holds a run with a different config (hash {other.get('config_hash')}, this "
                    f"config {config_hash}); use another --output, or --overwrite to replace it")
        for name in names:  # our partial files of a killed run: never part of the corpus
            if name.startswith(".") and name.endswith(".tmp") and self._owns(name[1:].removesuffix(".tmp")):
                storage.delete(name)
        if manifest is None:
            manifest = {"format": FORMAT, "status": "running", "config_hash": config_hash, "config": config,
                        "shards": [], "runs": []}
        manifest["status"] = "running"
        manifest["config"] = config  # same hash; runtime keys (num_dialogues, max_in_flight) may have changed
        return manifest

    def _owns(self, name: str) -> bool:
        """Is `name` one of this writer's shards or its manifest?"""
        match = SHARD_RE.match(name)
        return name == self.manifest_name or (match is not None and match.group(1) == self.tag)

    def _check_layout(self, names: list[str]) -> None:
        # A single run and a partitioned one, or two partition counts, in one directory would each miss the
        # other's conversations and generate them again: refuse.
        tags = {m.group(1) for n in names if (m := SHARD_RE.match(n))}
        tags |= {m.group(1) for n in names if (m := PARTITION_MANIFEST_RE.match(n))}
        counts = {t.split("of")[1] if t else None for t in tags}
        mine = self.tag.split("of")[1] if self.tag else None
        if counts - {mine}:
            layout = ", ".join(sorted("a single run" if c is None else f"{int(c)} partitions" for c in counts))
            raise OutputError(f"{self.out_dir} holds shards of {layout}; this run is "
                              + ("a single run" if mine is None else f"{int(mine)} partitions")
                              + ": use the same layout, another --output, or --overwrite")

    def _clear(self) -> None:
        # Manifests last: a kill half-way leaves a directory that still names its config, so a rerun without
        # --overwrite is refused as "a different config" rather than as "not empty, no manifest".
        for name in sorted(self.storage.names(), key=lambda n: n.startswith("manifest")):
            if SHARD_RE.match(name) or name == MANIFEST or PARTITION_MANIFEST_RE.match(name) or name.endswith(".tmp"):
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
        self.storage.write_table_atomic(name, pa.Table.from_pylist(self._buffer, schema=SCHEMA),
                                        row_group_size=ROW_GROUP_ROWS)
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
        self.storage.write_atomic(self.manifest_name, json.dumps(m, indent=2).encode())

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
        }

    def close(self, *, complete: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Flush the buffer, record this run and write the manifest; `complete` once every conversation is done."""
        self.flush()
        self.manifest["runs"].append(self.run_summary())
        self.write_manifest(complete=complete, extra=extra)
        return self.manifest


def totals(shards: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total = empty_stats()
    for shard in shards:
        merge_stats(total, shard)
    total["cached_prompt_share"] = {
        role: round(t["cached"] / t["prompt"], 4) if t["prompt"] else 0.0 for role, t in total["tokens"].items()}
    total["num_dialogues"] = total.pop("num_rows")
    return total
