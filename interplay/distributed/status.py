"""`interplay status DIR`: per-partition progress of a run, and the combined manifest once every partition is done.

A partitioned run (Ray workers, or `--num-partitions N --partition-index I` processes from a batch scheduler)
leaves one `manifest-pIIIofNNN.json` and one shard log `shards-pIIIofNNN.jsonl` per partition that ran. Progress
is counted from the shard logs, and every shard a log names is checked against its file's Parquet footer (no
data is read): a fraction of a second for 20,000 shards. The corpus is complete when all N partitions are; then
the combined `manifest.json` (merged totals, the partitions' logs) is written, and readers take the directory as
one corpus.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from interplay.common.partition import Partition
from interplay.generator.output.layout import FORMAT, MANIFEST, PARTITION_MANIFEST_RE, OutputError, log_name
from interplay.generator.output.shardlog import read_log
from interplay.generator.output.storage import Storage
from interplay.generator.output.writer import as_storage, read_manifest, totals

HELP = "per-partition progress of a run; writes the combined manifest when the corpus is complete"


@dataclass
class PartitionStatus:
    partition: Partition
    manifest: dict[str, Any] | None  # None: this partition never ran
    shards: list[dict[str, Any]] = field(default_factory=list)  # its shard log's entries
    problems: list[str] = field(default_factory=list)  # shards the log names that are gone or changed

    @property
    def state(self) -> str:
        if self.manifest is None:
            return "missing"
        if self.problems:
            return "damaged"
        # Counted, not taken from the status field: a process that opened the partition and died before closing
        # it leaves "running" beside shards that already hold every planned conversation.
        planned = self.num_planned
        return "complete" if planned is not None and self.num_done >= planned else self.manifest["status"]

    @property
    def num_done(self) -> int:
        return sum(s["num_rows"] for s in self.shards)

    @property
    def num_planned(self) -> int | None:
        return None if self.manifest is None else self.manifest.get("num_planned")


def partition_statuses(out_dir: str | Path | Storage) -> list[PartitionStatus]:
    out = as_storage(out_dir)
    found: dict[Partition, dict[str, Any]] = {}
    for name in out.names():
        match = PARTITION_MANIFEST_RE.match(name)
        if match:
            found[Partition.parse(match.group(1))] = read_manifest(out, name)
    counts = {p.count for p in found}
    if len(counts) > 1:
        raise OutputError(f"{out} mixes runs with different partition counts {sorted(counts)}; "
                          "use one count per output directory")
    hashes = {m["config_hash"] for m in found.values()}
    if len(hashes) > 1:
        raise OutputError(f"{out} mixes partitions of runs with different configs (hashes {sorted(hashes)})")
    if not counts:
        return []
    count, statuses = counts.pop(), []
    for i in range(count):
        partition = Partition(i, count)
        manifest = found.get(partition)
        shards = logged_shards(out, partition.tag) if manifest else []
        statuses.append(PartitionStatus(partition, manifest, shards, check_shards(out, shards)))
    return statuses


def logged_shards(out: Storage, tag: str | None) -> list[dict[str, Any]]:
    """The entries of a shard log (a line cut off by a crash is left out: the next run logs its shard)."""
    return read_log(out, log_name(tag))[0]


def check_shards(out_dir: str | Path | Storage, shards: list[dict[str, Any]]) -> list[str]:
    """The shards a log names, checked against the files (their Parquet footers: no data is read)."""
    out, problems = as_storage(out_dir), []
    for shard in shards:
        try:
            num_rows = out.read_metadata(shard["file"]).num_rows
        except FileNotFoundError:
            problems.append(f"{shard['file']} is missing")
            continue
        except (OSError, pa.ArrowException) as e:
            problems.append(f"{shard['file']} is unreadable ({' '.join(str(e).split())[:120]})")
            continue
        if num_rows != shard["num_rows"]:
            problems.append(f"{shard['file']} holds {num_rows} rows, the shard log says {shard['num_rows']}")
    return problems


def combine(out_dir: str | Path | Storage, statuses: list[PartitionStatus]) -> dict[str, Any]:
    """Write the combined manifest.json of a complete partitioned run."""
    manifests = [s.manifest for s in statuses]
    first = manifests[0]
    shards = [shard for s in statuses for shard in s.shards]
    combined = {
        "format": FORMAT, "status": "complete", "config_hash": first["config_hash"], "config": first["config"],
        "num_dialogues": first.get("num_dialogues"), "seeds": first.get("seeds"),
        "shard_logs": [log_name(s.partition.tag) for s in statuses], "num_shards": len(shards),
        "totals": totals(shards), "runs": [run for m in manifests for run in m["runs"]],
        "partitions": {s.partition.tag: {"num_dialogues": s.num_done} for s in statuses},
    }
    as_storage(out_dir).write_atomic(MANIFEST, json.dumps(combined, indent=2).encode())
    return combined


def report(out_dir: str | Path | Storage) -> tuple[bool, str]:
    """(is the corpus complete, a readable table). Writes the combined manifest when complete."""
    statuses = partition_statuses(out_dir)
    if not statuses:
        manifest = read_manifest(out_dir)
        if manifest is None:
            raise OutputError(f"{out_dir} holds no manifest: not an interplay output directory")
        shards = logged_shards(as_storage(out_dir), None)
        done = sum(s["num_rows"] for s in shards)
        problems = check_shards(out_dir, shards)
        if problems:
            return False, f"single run: DAMAGED, {done} dialogues listed; " + "; ".join(problems)
        return manifest["status"] == "complete", f"single run: {manifest['status']}, {done} dialogues"
    lines = [f"{'partition':<12}{'status':<10}{'dialogues':>16}"]
    for s in statuses:
        planned = "?" if s.num_planned is None else s.num_planned
        lines.append(f"{s.partition.tag:<12}{s.state:<10}{f'{s.num_done}/{planned}':>16}")
    missing = [s.partition.tag for s in statuses if s.manifest is None]
    unfinished = [s.partition.tag for s in statuses if s.manifest is not None and s.state != "complete"]
    lines += [f"{s.partition.tag}: {p}" for s in statuses for p in s.problems]
    if missing or unfinished:
        why = (f"missing (never ran): {', '.join(missing)}" if missing else "") + \
              ("; " if missing and unfinished else "") + \
              (f"not finished: {', '.join(unfinished)}" if unfinished else "")
        lines.append(f"corpus: INCOMPLETE, {why}")
        return False, "\n".join(lines)
    combined = combine(out_dir, statuses)
    lines.append(f"corpus: complete, {combined['totals']['num_dialogues']} dialogues in "
                 f"{combined['num_shards']} shards; wrote {as_storage(out_dir).path(MANIFEST)}")
    return True, "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="output directory of a run")


def main(args: argparse.Namespace) -> int:
    complete, text = report(args.output)
    print(text)
    return 0 if complete else 1
