"""The failure log: one JSON line per failed attempt at a conversation, so that later runs retry it a bounded
number of times.

    failures.jsonl              a single run's log
    failures-p003of008.jsonl    partition 3 of 8's log

A line: {"index": conversation_index, "error": the conversation's error}. A conversation that ends with outcome
`error` (a request failed for a reason other than engine death) is not written to a shard, which would make it
done for good: its failure is a line here instead, and it stays not done, so the next run generates it again. On
the attempt that reaches max_attempts its error row goes into a shard like any other row, and its error says how
many attempts it took. Exactly once holds as before: only a shard makes a conversation done, and only its last
attempt ever reaches one.

The writer thread appends the lines the same way as the shard log's (shardlog.ShardLog: fsynced in place
locally, rewritten at a bounded rate on an object store). A line cut off by a crash is dropped, so that attempt
is not counted: at worst one retry more, never a second row.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from interplay.generator.output.shardlog import ShardLog, read_lines
from interplay.generator.output.storage import Fence, Storage


def read_failures(storage: Storage, name: str) -> tuple[list[dict[str, Any]], bool]:
    """(the logged failures, whether the log must be rewritten: a line was cut off or unreadable)."""
    return read_lines(storage, name, lambda e: isinstance(e, dict) and isinstance(e.get("index"), int))


class Attempts:
    """Failed attempts per conversation that is not done yet: a dict of the failures only (a handful, where a
    set of every index would grow with the corpus)."""

    def __init__(self, entries: list[dict[str, Any]], done: Container[int], max_attempts: int):
        self.max_attempts = max_attempts
        self._counts: dict[int, int] = {}
        for entry in entries:
            if entry["index"] not in done:  # it succeeded (or used its attempts) since: its row is in a shard
                self._counts[entry["index"]] = self._counts.get(entry["index"], 0) + 1

    def __len__(self) -> int:
        """Conversations pending retry. The writer thread reads it for the manifest while the loop's thread
        settles conversations: len() of a dict is one atomic step."""
        return len(self._counts)

    def __getitem__(self, index: int) -> int:
        return self._counts.get(index, 0)

    def settle(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """A conversation has finished: returns the failure line to log when it is to be retried (it stays not
        done); None when its row goes into a shard, because it succeeded or failed its last attempt (its error,
        changed in place, then says how many attempts it took)."""
        index = record["conversation_index"]
        failed = self._counts.get(index, 0)
        if record["outcome"] != "error":
            if failed:
                del self._counts[index]
            return None
        if failed + 1 < self.max_attempts:
            self._counts[index] = failed + 1
            return {"index": index, "error": record["error"]}
        if failed:
            del self._counts[index]
            record["error"] = f"{record['error']} (failed {failed + 1} attempts)"
        return None


class FailureLog:
    """A writer's failure log and the attempts it counts. The loop's thread settles conversations
    (`attempts.settle`); the writer thread appends the lines."""

    def __init__(self, storage: Storage, name: str, *, fence: Fence | None, done: Container[int],
                 max_attempts: int):
        self.name = name
        self._log = ShardLog(storage, name, fence=fence)
        entries, damaged = read_failures(storage, name)
        self._log.adopt(entries, rewrite=damaged)
        self._exists = bool(entries) or storage.exists(name)
        self.attempts = Attempts(entries, done, max_attempts)

    def append(self, line: dict[str, Any]) -> None:
        if not self._exists:  # made at the first failure: an output that never had one has no such file
            self._log.adopt([], rewrite=True)
            self._exists = True
        self._log.append(line)

    def flush(self) -> None:
        self._log.flush()

    def summary(self) -> dict[str, Any]:
        """The manifest's `failures`."""
        return {"log": self.name, "max_attempts": self.attempts.max_attempts,
                "num_pending_retry": len(self.attempts)}
