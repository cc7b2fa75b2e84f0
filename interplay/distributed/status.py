"""`interplay status DIR`: per-partition progress of a run, and the combined manifest once every partition is done.

A partitioned run (Ray workers, or `--num-partitions N --partition-index I` processes from a batch scheduler)
leaves one `manifest-pIIIofNNN.json` and one shard log `shards-pIIIofNNN.jsonl` per partition that ran. Progress
is counted from the shard logs, and every shard a log names is checked against its file's Parquet footer (no
data is read): a fraction of a second for 20,000 shards. The corpus is complete when all N partitions are; then
the combined `manifest.json` (merged totals, the partitions' logs) is written, and readers take the directory as
one corpus.

What counts is distinct conversations, never rows: a partition is complete when each of the conversations it
owns among the first `num_dialogues` (its manifest's `num_planned`) is in its shard log exactly once and none is
pending retry (its failure log). A conversation logged twice (a repeated line, or two shards holding it, in one
partition or two) is reported and counted once; conversations beyond `num_dialogues` (an earlier run's larger
`--num-dialogues`) are shown apart and count for nothing. Every partition must have been run with the same
`num_dialogues`, and together they must hold each of conversations 0..num_dialogues-1. The indices go into
bitmaps (doneset.py), so memory stays flat at a million conversations.

A complete corpus, partitioned or single, gets its dataset card (README.md, generator/output/card.py) written
again here, with the headline figures of an `interplay report` run since.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from interplay.common.partition import Partition
from interplay.generator.output.card import CARD, write_card
from interplay.generator.output.doneset import DoneSet
from interplay.generator.output.failures import read_failures
from interplay.generator.output.layout import (FORMAT, MANIFEST, PARTITION_MANIFEST_RE, OutputError, failure_log_name,
                                               log_name)
from interplay.generator.output.shardlog import decode_indices, read_log
from interplay.generator.output.storage import Storage
from interplay.generator.output.writer import as_storage, read_manifest, totals

HELP = "per-partition progress of a run; writes the combined manifest when the corpus is complete"
EXAMPLES = 5  # conversation indices named in a message; the rest are counted


@dataclass
class PartitionStatus:
    partition: Partition | None  # None: a single run
    manifest: dict[str, Any] | None  # None: this partition never ran
    shards: list[dict[str, Any]] = field(default_factory=list)  # its shard log's entries
    problems: list[str] = field(default_factory=list)  # shards the log names that are gone or changed
    duplicates: list[str] = field(default_factory=list)  # conversations its log names more than once
    num_done: int = 0  # distinct planned conversations (index < num_dialogues) in its log
    num_beyond: int = 0  # distinct conversations in its log at or beyond num_dialogues
    num_pending_retry: int = 0  # planned, not done, with a failed attempt logged: a rerun generates them

    @property
    def tag(self) -> str | None:
        return None if self.partition is None else self.partition.tag

    @property
    def num_dialogues(self) -> int | None:
        return None if self.manifest is None else self.manifest.get("num_dialogues")

    @property
    def num_planned(self) -> int | None:
        return None if self.manifest is None else self.manifest.get("num_planned")

    @property
    def is_complete(self) -> bool:
        # Counted, not taken from the status field: a process that opened the partition and died before closing
        # it leaves "running" beside shards that already hold every planned conversation; and a manifest says
        # nothing of a log line written twice.
        return (self.manifest is not None and not self.problems and not self.duplicates and not self.num_pending_retry
                and self.num_dialogues is not None and self.num_planned is not None
                and self.num_done == self.num_planned)

    @property
    def state(self) -> str:
        if self.manifest is None:
            return "missing"
        if self.problems:
            return "damaged"
        if self.duplicates:
            return "duplicate"
        if self.is_complete:
            return "complete"
        return "incomplete" if self.manifest["status"] == "complete" else self.manifest["status"]

    def notes(self) -> list[str]:
        """What keeps it from being complete, and conversations that count for nothing."""
        notes = [*self.problems, *self.duplicates]
        if self.manifest is None:
            return notes
        planned = self.num_planned
        if planned is None or self.num_dialogues is None:
            notes.append("its manifest records no num_dialogues/num_planned: what it owns is unknown")
        elif self.num_done > planned:
            notes.append(f"its log holds {self.num_done} conversations below num_dialogues {self.num_dialogues}, "
                         f"more than the {planned} it owns")
        if self.num_pending_retry:
            notes.append(f"{_n(self.num_pending_retry)} pending retry ({failure_log_name(self.tag)}): "
                         "a rerun generates them again")
        if self.num_beyond:
            notes.append(f"{_n(self.num_beyond)} at or beyond num_dialogues {self.num_dialogues} "
                         "(an earlier run's larger --num-dialogues), not counted")
        return notes


def partition_statuses(out_dir: str | Path | Storage, corpus: DoneSet | None = None) -> list[PartitionStatus]:
    """Every partition's status, counted; `corpus` collects the conversation indices of all of them."""
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
    corpus = DoneSet() if corpus is None else corpus
    for i in range(count):
        partition = Partition(i, count)
        statuses.append(counted(out, partition, found.get(partition), corpus))
    return statuses


def counted(out: Storage, partition: Partition | None, manifest: dict[str, Any] | None,
            corpus: DoneSet) -> PartitionStatus:
    """A partition's (or a single run's) status: its log's shards checked and its conversations counted."""
    tag = None if partition is None else partition.tag
    shards = logged_shards(out, tag) if manifest else []
    status = PartitionStatus(partition, manifest, shards, check_shards(out, shards))
    if manifest is not None:
        tally(status, read_failures(out, failure_log_name(tag))[0], corpus)
    return status


def tally(status: PartitionStatus, failures: list[dict[str, Any]], corpus: DoneSet) -> None:
    """Count a partition's distinct conversations into `status`, and add them to `corpus` (every partition's).

    Two bitmaps of the indices (this log's and the corpus's) and the shard names, never a set of ints. A shard's
    indices go into both bitmaps at once, and what did not grow them is what was there already: the usual case,
    no duplicate, costs two bit sets an index."""
    limit = status.num_dialogues
    own, files = DoneSet(), set()
    repeated: dict[str, int] = {}  # shard -> how many lines name it
    elsewhere: dict[str, int] = {}  # shard -> its conversations that another partition's log names too
    num_again = 0  # conversations that more than one of this log's shards hold
    for shard in status.shards:
        name = shard["file"]
        if name in files:  # the same line twice: its conversations are counted once
            repeated[name] = repeated.get(name, 1) + 1
            continue
        files.add(name)
        try:
            indices = _indices(shard)
            in_own, in_corpus = len(own), len(corpus)
            for index in indices:
                own.add(index)
                corpus.add(index)
        except (TypeError, ValueError) as e:
            status.problems.append(f"the shard log's line for {name} is not readable ({e})")
            continue
        again = len(indices) - (len(own) - in_own)
        num_again += again
        if cross := len(indices) - (len(corpus) - in_corpus) - again:
            elsewhere[name] = cross
    for name, times in repeated.items():
        status.duplicates.append(f"{name} is logged {times} times (counted once; a rerun rewrites the log)")
    if num_again:
        again_in = _again(status.shards)
        status.duplicates.append(f"{_n(num_again)} in more than one of its shards: "
                                 + ", ".join(f"{i} again in {n}" for i, n in again_in) + _more(num_again, again_in))
    if elsewhere:
        shown = list(elsewhere.items())[:EXAMPLES]
        status.duplicates.append(f"{_n(sum(elsewhere.values()))} also in another partition's log: "
                                 + ", ".join(f"{k} in {n}" for n, k in shown) + _more(len(elsewhere), shown, "shards"))
    status.num_done = len(own) if limit is None else own.count_below(limit)
    status.num_beyond = len(own) - status.num_done
    pending = DoneSet()
    for failure in failures:
        index = failure["index"]
        if index >= 0 and (limit is None or index < limit) and index not in own:
            pending.add(index)
    status.num_pending_retry = len(pending)


def _indices(shard: dict[str, Any]) -> list[int]:
    indices = decode_indices(shard["indices"])
    if len(indices) != shard["num_rows"]:
        raise ValueError(f"{len(indices)} conversations for {shard['num_rows']} rows")
    return indices


def _again(shards: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """The first conversations found in a second shard of one log, and that shard (only when there are some)."""
    seen, files, found = DoneSet(), set(), []
    for shard in shards:
        if shard["file"] in files:
            continue
        files.add(shard["file"])
        try:
            for index in _indices(shard):
                if index in seen:
                    found.append((index, shard["file"]))
                    if len(found) == EXAMPLES:
                        return found
                seen.add(index)
        except (TypeError, ValueError):
            continue
    return found


def _n(count: int) -> str:
    return f"{count} conversation" + ("" if count == 1 else "s")


def _more(total: int, shown: list[Any], what: str = "") -> str:
    return f" and {total - len(shown)} more{' ' + what if what else ''}" if total > len(shown) else ""


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
        "shard_logs": [log_name(s.tag) for s in statuses], "num_shards": len(shards),
        "totals": totals(shards), "runs": [run for m in manifests for run in m["runs"]],
        "partitions": {s.tag: {"num_dialogues": s.num_done} for s in statuses},
    }
    as_storage(out_dir).write_atomic(MANIFEST, json.dumps(combined, indent=2).encode())
    return combined


def report(out_dir: str | Path | Storage) -> tuple[bool, str]:
    """(is the corpus complete, a readable table). Writes the combined manifest when complete."""
    corpus = DoneSet()
    statuses = partition_statuses(out_dir, corpus)
    if not statuses:
        return single_report(out_dir)
    lines = [f"{'partition':<12}{'status':<11}{'dialogues':>15}"]
    for s in statuses:
        planned = "?" if s.num_planned is None else s.num_planned
        lines.append(f"{s.partition.tag:<12}{s.state:<11}{f'{s.num_done}/{planned}':>15}")
    lines += [f"{s.tag}: {note}" for s in statuses for note in s.notes()]
    missing = [s.tag for s in statuses if s.manifest is None]
    ran = [s for s in statuses if s.manifest is not None]
    unfinished = [s.tag for s in ran if not s.is_complete]
    why = []
    if missing:
        why.append(f"missing (never ran): {', '.join(missing)}")
    if unfinished:
        why.append(f"not finished: {', '.join(unfinished)}")
    num_dialogues = {s.num_dialogues for s in ran}
    if len(num_dialogues) > 1:
        why.append("the partitions were run with different --num-dialogues ("
                   + ", ".join(f"{s.tag}: {s.num_dialogues}" for s in ran)
                   + "); rerun them with one value")
    elif not why:
        # Each partition holds what it owns; together they must hold every planned conversation, once.
        n = num_dialogues.pop()
        if corpus.count_below(n) != n:
            why.append(f"the partitions hold {corpus.count_below(n)} of conversations 0..{n - 1}")
    if why:
        lines.append(f"corpus: INCOMPLETE, {'; '.join(why)}")
        return False, "\n".join(lines)
    combined = combine(out_dir, statuses)
    card = write_card(out_dir, combined, detail=statuses[0].manifest)  # the whole corpus's dataset card
    beyond = sum(s.num_beyond for s in statuses)
    lines.append(f"corpus: complete, {sum(s.num_done for s in statuses)} dialogues"
                 + (f" (and {beyond} beyond num_dialogues)" if beyond else "")
                 + f" in {combined['num_shards']} shards; wrote {as_storage(out_dir).path(MANIFEST)}"
                 + (f" and {CARD}" if card else ""))
    return True, "\n".join(lines)


def single_report(out_dir: str | Path | Storage) -> tuple[bool, str]:
    """A single run's line: the same counting as a partition's."""
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise OutputError(f"{out_dir} holds no manifest: not an interplay output directory")
    s = counted(as_storage(out_dir), None, manifest, DoneSet())
    if s.problems:
        return False, f"single run: DAMAGED, {s.num_done} dialogues listed; " + "; ".join(s.problems)
    notes = "".join(f"; {note}" for note in s.notes())
    if s.is_complete:
        write_card(out_dir, manifest)  # again (the run wrote it), with the figures of a report run since
        return True, f"single run: complete, {s.num_done} dialogues{notes}"
    planned = "?" if s.num_planned is None else s.num_planned
    return False, f"single run: {s.state}, {s.num_done}/{planned} dialogues{notes}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="output directory of a run")


def main(args: argparse.Namespace) -> int:
    complete, text = report(args.output)
    print(text)
    return 0 if complete else 1
