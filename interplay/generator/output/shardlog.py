"""The shard log: one JSON line per published shard, so that resuming and `interplay status` never open the shards.

    shards.jsonl              a single run's log
    shards-p003of008.jsonl    partition 3 of 8's log

A line: {"file", "num_rows", "outcomes", "tokens", "indices"}, with the shard's conversation indices sorted and
delta-encoded ([first, gap, gap, ...]: a few bytes each). Appending a line is O(1), where rewriting a manifest
that lists every shard made a million dialogues in 50-row shards quadratic.

The shards stay the truth, and the log only a record of them: a shard is published first and logged after, so a
crash in between leaves a shard the log does not name, which the next run reads and logs; a line cut off by a
crash is dropped, and its shard read again the same way; a line whose file is gone is dropped, and its
conversations are generated again.

Locally a line is appended and fsynced inside the writer's fence (storage.py), so a writer that lost its lease
never appends after its successor took over. Object stores cannot append: there the log is kept in memory (about
300 bytes a shard) and rewritten whole at most every LOG_REWRITE_S seconds and at close; a crash loses at most
that much of the log, never a shard. On s3:// each rewrite replaces only the version this writer wrote last
(objectstore.py), so a superseded writer never rewrites its successor's log.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from interplay.generator.output.storage import Fence, Storage, fenced

LOG_REWRITE_S = 30.0  # object stores only: the longest the log lags behind the shards


def encode_indices(indices: Iterable[int]) -> list[int]:
    ordered = sorted(indices)
    return ordered[:1] + [b - a for a, b in zip(ordered, ordered[1:])]


def decode_indices(encoded: list[int]) -> list[int]:
    return list(itertools.accumulate(encoded))


def _line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def read_lines(storage: Storage, name: str,
               is_entry: Callable[[Any], bool]) -> tuple[list[dict[str, Any]], bool]:
    """An append-only JSON-lines log: (its entries, whether it must be rewritten: a line was cut off by a crash or
    is not an entry). Shared by the shard log and the failure log (failures.py)."""
    data = storage.read_bytes(name) or b""
    *lines, last = data.split(b"\n")
    damaged = last.strip() != b""  # a crash mid-append: the last line has no newline yet
    entries = []
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            damaged = True
            continue
        if is_entry(entry):
            entries.append(entry)
        else:
            damaged = True
    return entries, damaged


def read_log(storage: Storage, name: str) -> tuple[list[dict[str, Any]], bool]:
    """The shard log's entries, and whether it must be rewritten."""
    return read_lines(storage, name, lambda e: isinstance(e, dict) and {"file", "num_rows", "indices"} <= set(e))


class ShardLog:
    """Appends one line per shard, each write inside `fence` (the writer still holds the output)."""

    def __init__(self, storage: Storage, name: str, fence: Fence | None = None):
        self.storage, self.name, self.fence = storage, name, fence
        self.appends_in_place = storage.is_local
        self._lines: list[bytes] = []  # object stores: the whole log, rewritten at a bounded rate
        self._rewritten_at = time.monotonic()
        self._dirty = False

    def adopt(self, entries: list[dict[str, Any]], *, rewrite: bool) -> None:
        """Start from `entries`, what the log and the shards say at open; `rewrite` replaces the log with them
        (a crash left it damaged, or it does not exist yet)."""
        if not self.appends_in_place:
            self._lines = [_line(e) for e in entries]
        if rewrite:
            self.storage.write_atomic(self.name, b"".join(_line(e) for e in entries), fence=self.fence)
        self._rewritten_at = time.monotonic()

    def append(self, entry: dict[str, Any]) -> None:
        if self.appends_in_place:
            with fenced(self.fence):
                self.storage.append(self.name, _line(entry))
            return
        self._lines.append(_line(entry))
        self._dirty = True
        if time.monotonic() - self._rewritten_at >= LOG_REWRITE_S:
            self.flush()

    def flush(self) -> None:
        """Object stores: write what is only in memory (at close, and at a bounded rate)."""
        if self._dirty:
            self.storage.write_atomic(self.name, b"".join(self._lines), fence=self.fence)
            self._rewritten_at, self._dirty = time.monotonic(), False
