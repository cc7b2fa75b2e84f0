"""What an output directory holds: the names of corpus files, which files are interplay's, and clearing a run.

    manifest.json, shards.jsonl, failures.jsonl,                a single run
        shard-00000.parquet
    manifest-p003of008.json, shards-p003of008.jsonl,            partition 3 of 8 of a partitioned run
        failures-p003of008.jsonl, shard-p003of008-00000.parquet
    .lease*.json, .lease.lock, .*.tmp                           leases (lease.py) and files being written
    logs/, report/, compare-*/                                  engine logs and quality reports
"""

from __future__ import annotations

import re
from pathlib import Path

from interplay.generator.output.lease import Lease, LeaseHeld, LeaseLost, lease_name
from interplay.generator.output.storage import Storage, as_storage

FORMAT = "interplay.corpus/1"
MANIFEST = "manifest.json"
# shard-00000.parquet for a single run; shard-p003of008-00000.parquet for partition 3 of 8 of a partitioned run.
SHARD_RE = re.compile(r"^shard-(?:(p\d{3,}of\d{3,})-)?(\d{5,})\.parquet$")
PARTITION_MANIFEST_RE = re.compile(r"^manifest-(p\d{3,}of\d{3,})\.json$")
# The shard log (shardlog.py): shards.jsonl, or shards-p003of008.jsonl.
SHARD_LOG_RE = re.compile(r"^shards(?:-(p\d{3,}of\d{3,}))?\.jsonl$")
# The failure log (failures.py): failures.jsonl, or failures-p003of008.jsonl.
FAILURE_LOG_RE = re.compile(r"^failures(?:-(p\d{3,}of\d{3,}))?\.jsonl$")


def log_name(tag: str | None) -> str:
    return "shards.jsonl" if tag is None else f"shards-{tag}.jsonl"


def failure_log_name(tag: str | None) -> str:
    return "failures.jsonl" if tag is None else f"failures-{tag}.jsonl"

# Written into an output by interplay besides the corpus itself: never a reason to call it "not ours".
_SIDE_DIRS = re.compile(r"^(logs|report|compare-.*)$")


def is_interplay_name(name: str) -> bool:
    return (name.startswith(".") or bool(_SIDE_DIRS.match(name)) or bool(SHARD_RE.match(name))
            or name == MANIFEST or bool(PARTITION_MANIFEST_RE.match(name)) or bool(SHARD_LOG_RE.match(name))
            or bool(FAILURE_LOG_RE.match(name)))


class OutputError(Exception):
    """The output directory cannot be used for this run; the message says why and what to do."""


def clear_partitions(out_dir: str | Path | Storage, count: int) -> list[str]:
    """Delete the shards and manifests of every partition of a `count`-partition run, and the combined manifest:
    what `--ray --overwrite` replaces. Takes every partition's lease first, so it is refused while any partition
    is being written. Returns the names deleted."""
    from interplay.common.partition import Partition

    storage = as_storage(out_dir)
    tags = {Partition(i, count).tag for i in range(count)}
    names = storage.names()
    counts = {m.group(1).split("of")[1] for n in names if (m := SHARD_RE.match(n) or PARTITION_MANIFEST_RE.match(n))
              and m.group(1)} | ({"single"} if any((m := SHARD_RE.match(n)) and not m.group(1) for n in names)
                                 else set())
    if counts - {f"{count:03d}"}:
        raise OutputError(f"{storage} holds another layout than {count} partitions; --overwrite deletes only "
                          "this run's own files: use another --output")
    leases = []
    try:
        for tag in sorted(tags):
            leases.append(Lease.acquire(storage, lease_name(tag), heartbeat=False))
        doomed = [n for n in storage.names() if n == MANIFEST or (
            (m := _partition_file(n.strip(".").removesuffix(".tmp"))) and m.group(1) in tags)]
        for name in sorted(doomed, key=lambda n: "manifest" in n):  # manifests last: they name the config
            storage.delete(name)
        return doomed
    except (LeaseHeld, LeaseLost) as e:
        raise OutputError(f"--overwrite refused: {e}") from None
    finally:
        for lease in leases:
            lease.release()


def _partition_file(name: str) -> re.Match[str] | None:
    return (SHARD_RE.match(name) or PARTITION_MANIFEST_RE.match(name) or SHARD_LOG_RE.match(name)
            or FAILURE_LOG_RE.match(name))
