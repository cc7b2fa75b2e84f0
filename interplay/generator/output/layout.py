"""What an output directory holds: the names of corpus files, which files are interplay's, and clearing a run.

    manifest.json, shards.jsonl, failures.jsonl,                a single run
        shard-00000.parquet
    manifest-p003of008.json, shards-p003of008.jsonl,            partition 3 of 8 of a partitioned run
        failures-p003of008.jsonl, shard-p003of008-00000.parquet
    .layout.json                                                the output's layout and corpus identity hash
    .lease*.json, .lease.lock, .*.tmp                           leases (lease.py), files being written (storage.py)
    logs/, report/, compare-*/                                  engine logs and quality reports

One layout per output, decided once: the first writer to open it records, under the lease lock and together
with its lease, whether it is a single run or N partitions and the corpus identity hash (.layout.json, created
only if absent). Every later writer of another layout or identity is refused while the record stands, with or
without shards; `--overwrite` of the same layout may replace it (checks.py). An output written before the record
existed is judged by its files and live leases, and gets its record at the next open.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

from interplay.generator.output.lease import Lease, LeaseHeld, LeaseLost, lease_name, live_leases
from interplay.generator.output.storage import OutputError, Storage, as_storage, tmp_target

FORMAT = "interplay.corpus/1"
MANIFEST = "manifest.json"
LAYOUT_RECORD = ".layout.json"
LAYOUT_FORMAT = "interplay.layout/1"
# shard-00000.parquet for a single run; shard-p003of008-00000.parquet for partition 3 of 8 of a partitioned run.
SHARD_RE = re.compile(r"^shard-(?:(p\d{3,}of\d{3,})-)?(\d{5,})\.parquet$")
PARTITION_MANIFEST_RE = re.compile(r"^manifest-(p\d{3,}of\d{3,})\.json$")
# The shard log (shardlog.py): shards.jsonl, or shards-p003of008.jsonl.
SHARD_LOG_RE = re.compile(r"^shards(?:-(p\d{3,}of\d{3,}))?\.jsonl$")
# The failure log (failures.py): failures.jsonl, or failures-p003of008.jsonl.
FAILURE_LOG_RE = re.compile(r"^failures(?:-(p\d{3,}of\d{3,}))?\.jsonl$")
LEASE_RE = re.compile(r"^\.lease(?:-(p\d{3,}of\d{3,}))?\.json$")
PARTITION_TAG_RE = re.compile(r"^p\d{3,}of\d{3,}$")


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


# -- layouts: None is a single run, N a run split into N partitions ----------------------------------------------

def manifest_name(tag: str | None) -> str:
    return MANIFEST if tag is None else f"manifest-{tag}.json"


def count_of(tag: str | None) -> int | None:
    """The layout a partition tag ("p003of008") belongs to: 8; None (a single run) for None."""
    return None if tag is None else int(tag.split("of")[1])


def describe_layout(count: int | None) -> str:
    return "a single run" if count is None else f"{count} partitions"


def read_json(storage: Storage, name: str) -> dict[str, Any] | None:
    try:
        data = storage.read_bytes(name)
        return None if data is None else json.loads(data)
    except (OSError, ValueError) as e:
        raise OutputError(f"{storage.path(name)} is unreadable ({e}); move it away to start over") from None


def is_combined(manifest: Any) -> bool:
    """The combined manifest.json of a partitioned run (interplay status writes it), not a single run's own."""
    return isinstance(manifest, dict) and isinstance(manifest.get("partitions"), dict)


def combined_count(manifest: dict[str, Any]) -> int | None:
    """The partition count a combined manifest names."""
    counts = {count_of(tag) for tag in manifest["partitions"] if PARTITION_TAG_RE.match(str(tag))}
    return counts.pop() if len(counts) == 1 else None


def read_layout(storage: Storage) -> dict[str, Any] | None:
    """The output's layout record, or None if it has none yet."""
    record = read_json(storage, LAYOUT_RECORD)
    if record is not None and not (isinstance(record, dict) and record.get("format") == LAYOUT_FORMAT
                                   and "num_partitions" in record and "config_hash" in record):
        raise OutputError(f"{storage.path(LAYOUT_RECORD)} is not a layout record; move it away to start over")
    return record


def layout_record(count: int | None, config_hash: str) -> bytes:
    return json.dumps({"format": LAYOUT_FORMAT, "layout": "single" if count is None else "partitions",
                       "num_partitions": count, "config_hash": config_hash, "recorded_at": time.time(),
                       "host": socket.gethostname(), "pid": os.getpid()}, indent=2).encode()


def layouts_found(storage: Storage, names: list[str], manifests: dict[str, Any] | None = None) -> dict[int | None, str]:
    """The layouts an output shows, each with what shows it: its shards, manifests and logs, and its live writers'
    leases (an output written before the layout record, or by a writer that has not recorded it yet)."""
    found: dict[int | None, str] = {}
    for name in names:
        if match := (SHARD_RE.match(name) or SHARD_LOG_RE.match(name) or FAILURE_LOG_RE.match(name)):
            found.setdefault(count_of(match.group(1)), name)
        elif match := PARTITION_MANIFEST_RE.match(name):
            found.setdefault(count_of(match.group(1)), name)
    if MANIFEST in names:
        manifest = (manifests or {}).get(MANIFEST) or read_json(storage, MANIFEST)
        if manifest is not None:
            if is_combined(manifest):
                if (count := combined_count(manifest)) is not None:
                    found.setdefault(count, f"{MANIFEST} (combined)")
            else:
                found.setdefault(None, MANIFEST)
    for name in live_leases(storage, names):
        if match := LEASE_RE.match(name):
            found.setdefault(count_of(match.group(1)), f"{name} (a live writer)")
    return found


def layout_refusal(storage: Storage, mine: int | None, record: dict[str, Any] | None,
                   found: dict[int | None, str]) -> OutputError | None:
    """The refusal for a writer of layout `mine` on an output holding another layout, or None if it may go on."""
    theirs = {} if record is None else {record["num_partitions"]: f"recorded in {LAYOUT_RECORD}"}
    theirs.update({c: why for c, why in found.items() if c not in theirs})
    other = {c: why for c, why in theirs.items() if c != mine}
    if not other:
        return None
    layout = ", ".join(f"{describe_layout(c)} ({why})" for c, why in sorted(other.items(), key=lambda kv: kv[0] or 0))
    return OutputError(f"{storage.location} holds {layout}; this run is {describe_layout(mine)}: one output holds "
                       "one layout: use the same layout, or another --output (--overwrite never deletes another "
                       "layout's files)")


def clear_partitions(out_dir: str | Path | Storage, count: int) -> list[str]:
    """Delete the shards and manifests of every partition of a `count`-partition run, the combined manifest, its
    dataset card and the layout record: what `--ray --overwrite` replaces (its workers record the layout again). Takes every
    partition's lease first, so it is refused while any partition is being written, and refused for an output of
    another layout. A single run's manifest.json is never deleted. Returns the names deleted."""
    from interplay.common.partition import Partition
    from interplay.generator.output.card import CARD, is_card  # card.py reads this module's names

    storage = as_storage(out_dir)
    tags = {Partition(i, count).tag for i in range(count)}

    def check() -> None:
        found = layouts_found(storage, storage.names())
        if (refusal := layout_refusal(storage, count, read_layout(storage), found)) is not None:
            raise OutputError(f"--overwrite refused: {refusal}")

    check()  # reads only: a refused overwrite changes nothing
    leases = []
    try:
        for tag in sorted(tags):
            leases.append(Lease.acquire(storage, lease_name(tag), heartbeat=False))
        check()  # again, now that no partition of this layout can be opened
        names = storage.names()
        doomed = [n for n in names if (m := corpus_file(tmp_target(n) or n)) and m.group(1) in tags]
        if MANIFEST in names and is_combined(read_json(storage, MANIFEST)):
            doomed.append(MANIFEST)
        if CARD in names and is_card(storage.read_bytes(CARD)):  # it describes the corpus being replaced
            doomed.append(CARD)
        if LAYOUT_RECORD in names:
            doomed.append(LAYOUT_RECORD)
        # manifests last (they name the config), the layout record after them
        for name in sorted(doomed, key=lambda n: (n == LAYOUT_RECORD, "manifest" in n)):
            storage.delete(name)
        return doomed
    except (LeaseHeld, LeaseLost) as e:
        raise OutputError(f"--overwrite refused: {e}") from None
    finally:
        for lease in leases:
            lease.release()


def corpus_file(name: str) -> re.Match[str] | None:
    """A shard, manifest, shard log or failure log: group 1 is its partition tag (None for a single run's)."""
    return (SHARD_RE.match(name) or PARTITION_MANIFEST_RE.match(name) or SHARD_LOG_RE.match(name)
            or FAILURE_LOG_RE.match(name))
