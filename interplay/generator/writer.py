"""Parquet shards and the manifest, with exactly-once resume.

Layout of an output directory:
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
import os
import re
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from interplay.generator.records import ROLES, SCHEMA, add_stats, empty_stats, merge_stats

FORMAT = "interplay.corpus/1"
MANIFEST = "manifest.json"
# shard-00000.parquet for a single run; shard-p003of008-00000.parquet for partition 3 of 8 of a partitioned run.
SHARD_RE = re.compile(r"^shard-(?:(p\d{3,}of\d{3,})-)?(\d{5,})\.parquet$")
PARTITION_MANIFEST_RE = re.compile(r"^manifest-(p\d{3,}of\d{3,})\.json$")
ROW_GROUP_ROWS = 1000


class OutputError(Exception):
    """The output directory cannot be used for this run; the message says why and what to do."""


def _sync_dir(directory: Path) -> None:
    """Make a rename durable: without this a power cut may bring the old name back after the new file's data."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_dir(path.parent)


def read_manifest(out_dir: str | Path, name: str = MANIFEST) -> dict[str, Any] | None:
    path = Path(out_dir) / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise OutputError(f"{path} is unreadable ({e}); move it away to start over") from None


def shard_files(out_dir: str | Path) -> list[Path]:
    return sorted(p for p in Path(out_dir).iterdir() if SHARD_RE.match(p.name))


def _stats_from_file(path: Path) -> dict[str, Any]:
    stats = empty_stats()
    for record in pq.read_table(path, columns=["outcome", "turns"]).to_pylist():
        add_stats(stats, record)
    return stats


class CorpusWriter:
    """Buffers finished conversations and writes them as numbered shards; keeps the manifest current.

    With a partition tag ("p003of008") it owns only that partition's shards and manifest, so several writers can
    share one directory.
    """

    def __init__(self, out_dir: str | Path, *, config: dict[str, Any], config_hash: str,
                 dialogues_per_shard: int, overwrite: bool = False, partition_tag: str | None = None):
        self.out_dir = Path(out_dir)
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
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            probe = self.out_dir / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise OutputError(f"cannot write to output directory {self.out_dir}: {e.strerror or e}") from None
        if overwrite:
            self._clear()
        self._check_layout()
        manifest = read_manifest(self.out_dir, self.manifest_name)
        others = [read_manifest(self.out_dir, p.name) for p in self.out_dir.iterdir()
                  if (p.name == MANIFEST or PARTITION_MANIFEST_RE.match(p.name)) and p.name != self.manifest_name]
        if manifest is None and not others and any(p.name != "logs" and not p.name.endswith(".tmp")
                                                   for p in self.out_dir.iterdir()):
            raise OutputError(f"{self.out_dir} is not empty and holds no {MANIFEST}: choose an empty or new "
                              "directory (or pass --overwrite to delete interplay files there)")
        for other in [manifest, *others]:
            if other is not None and other.get("config_hash") != config_hash:
                raise OutputError(
                    f"{self.out_dir} holds a run with a different config (hash {other.get('config_hash')}, this "
                    f"config {config_hash}); use another --output, or --overwrite to replace it")
        for tmp in self.out_dir.glob(".*.tmp"):  # our partial files of a killed run: never part of the corpus
            if self._owns(tmp.name[1:].removesuffix(".tmp")):
                tmp.unlink()
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

    def _check_layout(self) -> None:
        # A single run and a partitioned one, or two partition counts, in one directory would each miss the
        # other's conversations and generate them again: refuse.
        tags = {m.group(1) for p in self.out_dir.iterdir() if (m := SHARD_RE.match(p.name))}
        tags |= {m.group(1) for p in self.out_dir.iterdir() if (m := PARTITION_MANIFEST_RE.match(p.name))}
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
        for path in sorted(self.out_dir.iterdir(), key=lambda p: p.name.startswith("manifest")):
            if SHARD_RE.match(path.name) or path.name == MANIFEST or PARTITION_MANIFEST_RE.match(path.name) \
                    or path.name.endswith(".tmp"):
                path.unlink()

    def _scan_done(self) -> set[int]:
        """Read the finished shards: which conversations are done, and per-shard stats for the manifest."""
        known = {s["file"]: s for s in self.manifest["shards"]}
        shards, done = [], set()
        for path in (p for p in shard_files(self.out_dir) if self._owns(p.name)):
            try:
                indices = pq.read_table(path, columns=["conversation_index"]).column(0).to_pylist()
            except (OSError, pa.ArrowException) as e:  # never one of ours (they are renamed in complete)
                raise OutputError(f"{path} is not a readable shard ({' '.join(str(e).split())[:200]}); move it "
                                  "away and rerun: its conversations are generated again") from None
            done.update(indices)
            # A shard renamed into place just before a crash may be missing from the manifest: recount it.
            entry = known.get(path.name) or {"file": path.name, **_stats_from_file(path)}
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
        table = pa.Table.from_pylist(self._buffer, schema=SCHEMA)
        tmp = self.out_dir / f".{name}.tmp"
        with pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as w:
            w.write_table(table, row_group_size=ROW_GROUP_ROWS)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.out_dir / name)
        _sync_dir(self.out_dir)
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
        atomic_write_bytes(self.out_dir / self.manifest_name, json.dumps(m, indent=2).encode())

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
