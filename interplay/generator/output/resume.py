"""What a reopened output already holds: the shard log, checked against the shards, read in one pass.

The log names each shard with its conversations and stats, so resuming never opens a shard's data unless the log
misses it (a crash between a shard's rename and its log line). Each logged shard's Parquet footer is checked on
a local disk (about 20 us a shard); on an object store that would cost a request per shard, so the log is trusted
there. A logged shard that is gone is dropped (its conversations are generated again); a damaged log is
rewritten from what the shards say. A conversation found in two shards (or twice in one) is refused, naming
them: a resume never carries a duplicate forward. Each shard carries the corpus identity hash of the run that
wrote it (Parquet metadata, SHARD_HASH_KEY): a shard the log misses that another config wrote (a superseded
writer's last upload after an --overwrite with a new config, on a store without a lock; a shard copied in by
hand) is refused, not adopted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from interplay.generator.output.checks import Ownership
from interplay.generator.output.doneset import DoneSet
from interplay.generator.output.layout import SHARD_RE, OutputError
from interplay.generator.output.records import add_stats, empty_stats, merge_stats
from interplay.generator.output.shardlog import ShardLog, decode_indices, encode_indices, read_log
from interplay.generator.output.storage import Storage


SHARD_HASH_KEY = b"interplay.config_hash"  # in each shard's Parquet metadata: the identity hash of its writer


@dataclass
class Resumed:
    done: DoneSet
    totals: dict[str, Any]  # summed shard stats (records.empty_stats)
    num_shards: int
    next_number: int  # the next shard's number


def shard_entry(name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """A shard's line in the shard log: its stats and its conversations."""
    stats, indices = empty_stats(), []
    for record in records:
        add_stats(stats, record)
        indices.append(record["conversation_index"])
    return {"file": name, **stats, "indices": encode_indices(indices)}


def resume(storage: Storage, own: Ownership, log: ShardLog, config_hash: str | None = None) -> Resumed:
    logged, damaged = read_log(storage, log.name)
    on_disk = {n for n in storage.names() if SHARD_RE.match(n) and own.owns(n)}
    entries, seen = [], set()
    for entry in logged:
        if entry["file"] in on_disk and entry["file"] not in seen:
            if storage.is_local:
                _check_footer(storage, entry)
            entries.append(entry)
            seen.add(entry["file"])
    entries += [_entry_from_file(storage, name, config_hash) for name in sorted(on_disk - seen)]
    log.adopt(entries, rewrite=damaged or len(entries) != len(logged) or not storage.exists(log.name))
    done, totals = DoneSet(), empty_stats()
    for entry in entries:
        for index in decode_indices(entry["indices"]):
            if index in done:
                raise _twice(storage, entries, entry, index)
            done.add(index)
        merge_stats(totals, entry)
    next_number = max((int(SHARD_RE.match(n).group(2)) for n in on_disk), default=-1) + 1
    return Resumed(done, totals, len(entries), next_number)


def _twice(storage: Storage, entries: list[dict[str, Any]], entry: dict[str, Any], index: int) -> OutputError:
    """A conversation in two shards (two writers at once, a shard copied by hand): resuming would keep both."""
    first = next(e["file"] for e in entries if index in decode_indices(e["indices"]))
    where = (f"twice in {storage.path(first)}" if first == entry["file"]
             else f"in two shards, {storage.path(first)} and {storage.path(entry['file'])}")
    return OutputError(f"conversation_index {index} is {where}: the corpus would hold it twice; move one of them "
                       "away (its other conversations are generated again) and rerun, or pass --overwrite to start "
                       "over")


def _entry_from_file(storage: Storage, name: str, config_hash: str | None) -> dict[str, Any]:
    try:
        table = storage.read_table(name, ["conversation_index", "outcome", "turns"])
    except (OSError, pa.ArrowException) as e:  # never one of ours (they are renamed in complete)
        raise _unreadable(storage, name, e) from None
    written = (table.schema.metadata or {}).get(SHARD_HASH_KEY)  # None: a shard of an earlier version
    if written is not None and config_hash is not None and written.decode() != config_hash:
        raise OutputError(f"{storage.path(name)} was written by a run of another config (hash {written.decode()}, "
                          f"this output's is {config_hash}) and no shard log names it: move it away and rerun (its "
                          "conversations are generated again)")
    return shard_entry(name, table.to_pylist())


def _check_footer(storage: Storage, entry: dict[str, Any]) -> None:
    """A logged shard must still be the file that was logged (not cut short or replaced since)."""
    try:
        num_rows = storage.read_metadata(entry["file"]).num_rows
    except (OSError, pa.ArrowException) as e:
        raise _unreadable(storage, entry["file"], e) from None
    if num_rows != entry["num_rows"]:
        raise _unreadable(storage, entry["file"], f"{num_rows} rows, the shard log says {entry['num_rows']}")


def _unreadable(storage: Storage, name: str, why: object) -> OutputError:
    return OutputError(f"{storage.path(name)} is not a readable shard ({' '.join(str(why).split())[:200]}); "
                       "move it away and rerun: its conversations are generated again")
