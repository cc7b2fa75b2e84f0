"""May this run write to this output? Every check reads only, so a refused run leaves the directory as it was.

A writer owns its own files (a single run: shard-NNNNN.parquet, shards.jsonl, failures.jsonl, manifest.json; a
partition: the same names tagged pIIIofNNN). It refuses an output that holds another layout, another config's
manifest, or files that are not interplay's; `--overwrite` deletes only what it owns.

The layout record (.layout.json, layout.py) decides the layout and the corpus identity once. The writer checks
it, takes its lease and, the first time, writes the record, all under the lease lock (lease.py: `guard`), so two
writers started together cannot both pass: the second sees the first's record. On s3:// there is no lock: both
may pass the check, but the record is created only if absent, so the store lets one create it and the other
reads it and is refused. Shards with no manifest and no
record say nothing of the config that wrote them: they are refused, never adopted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from interplay.generator.output.card import CARD, is_card
from interplay.generator.output.layout import (
    LAYOUT_RECORD,
    LEASE_RE,
    MANIFEST,
    PARTITION_MANIFEST_RE,
    SHARD_RE,
    OutputError,
    corpus_file,
    count_of,
    describe_layout,
    failure_log_name,
    is_combined,
    is_interplay_name,
    layout_record,
    layout_refusal,
    layouts_found,
    log_name,
    manifest_name,
    read_json,
    read_layout,
)
from interplay.generator.output.lease import live_leases
from interplay.generator.output.storage import Storage, as_storage, tmp_target


def read_manifest(out_dir: str | os.PathLike[str] | Storage, name: str = MANIFEST) -> dict[str, Any] | None:
    return read_json(as_storage(out_dir), name)


@dataclass
class Checked:
    manifest: dict[str, Any] | None  # this writer's own manifest, if any
    record: dict[str, Any] | None    # the layout record as it stood


class Ownership:
    """One writer's files in an output: `tag` is its partition ("p003of008"), None for a single run."""

    def __init__(self, storage: Storage, tag: str | None, identity: dict[str, Any] | None):
        self.storage, self.tag, self.identity = storage, tag, identity
        self.manifest_name = manifest_name(tag)
        self.log_name = log_name(tag)
        self.failure_log_name = failure_log_name(tag)
        self.count = count_of(tag)

    def owns(self, name: str) -> bool:
        """Is `name` one of this writer's shards, its shard or failure log or its manifest?"""
        match = SHARD_RE.match(name)
        return (name in (self.manifest_name, self.log_name, self.failure_log_name)
                or (match is not None and match.group(1) == self.tag))

    def owns_tmp(self, name: str) -> bool:
        """A temporary file of ours, whichever writer of this partition wrote it: a killed run's, or one a
        superseded writer can no longer publish. Never part of the corpus."""
        target = tmp_target(name)
        return target is not None and self.owns(target)

    def check(self, names: list[str], config_hash: str, overwrite: bool) -> Checked:
        """Refuse an output this run may not write to; returns this writer's own manifest, if any, and the layout
        record. Reads only."""
        storage, out = self.storage, self.storage.location
        record = read_layout(storage)
        manifests = {n: read_manifest(storage, n) for n in names if n == MANIFEST or PARTITION_MANIFEST_RE.match(n)}
        self.check_layout(names, record, manifests)
        manifest = manifests.get(self.manifest_name)
        # The combined manifest of a partitioned run is derived from the partitions' (interplay status writes
        # it): an overwrite of one partition makes it wrong, and deletes it.
        derived = MANIFEST if self.tag is not None else None
        others = {n: m for n, m in manifests.items() if n != self.manifest_name}
        # interplay's own dataset card (card.py) is no foreign file: a corpus whose manifest is gone is judged by
        # its shards and layout record, as before it had a card
        foreign = [n for n in names if not is_interplay_name(n)
                   and not (n == CARD and is_card(storage.read_bytes(n)))]
        if manifest is None and not others and foreign:
            raise OutputError(f"{out} is not empty and holds no {MANIFEST} ({', '.join(foreign[:3])}): "
                              "choose an empty or new directory; --overwrite deletes only interplay's own files")
        if manifest is not None and not overwrite and manifest.get("config_hash") != config_hash:
            raise OutputError(f"{out} holds a run with a different config ({self.differs(manifest)}); "
                              "use another --output, or --overwrite to delete it (its shards and manifest) "
                              "and start over")
        for name, other in others.items():
            if other is not None and other.get("config_hash") != config_hash and not (overwrite and name == derived):
                raise OutputError(
                    f"{out} holds {name} of a run with a different config ({self.differs(other)}); "
                    "--overwrite deletes only this partition's own files: use another --output, or delete the "
                    "old run (`--ray --overwrite` replaces every partition)")
        if record is not None and record.get("config_hash") != config_hash:
            self.check_replace(names, record, manifests, overwrite)
        if record is None:
            self.check_orphans(names, manifests, overwrite)
        return Checked(manifest, record)

    def check_replace(self, names: list[str], record: dict[str, Any], manifests: dict[str, Any],
                      overwrite: bool) -> None:
        """The layout record names another corpus identity: only this layout's --overwrite may replace it, and a
        partition's only when no other partition has files or a live writer (they are the recorded corpus)."""
        out = self.storage.location
        known = [m for m in manifests.values() if isinstance(m, dict) and m.get("config_hash") == record["config_hash"]]
        differs = self.differs(known[0]) if known else f"hash {record['config_hash']}"
        if not overwrite:
            raise OutputError(f"{out} holds a run with a different config ({differs}; recorded in {LAYOUT_RECORD}); "
                              "use another --output, or --overwrite to delete "
                              + ("it (its shards and manifest) and start over" if self.tag is None else
                                 "this partition's own files and start over (`--ray --overwrite` replaces every "
                                 "partition)"))
        if self.tag is None:
            return
        held = [n for n in live_leases(self.storage, names) if (m := LEASE_RE.match(n)) and m.group(1) != self.tag]
        theirs = [n for n in names if (m := corpus_file(n)) and m.group(1) != self.tag]
        if held or theirs:
            raise OutputError(
                f"{out} holds a run of {describe_layout(self.count)} with a different config ({differs}): "
                + (f"{held[0]} is held by a live writer" if held else f"{theirs[0]} is another partition's")
                + "; --overwrite deletes only this partition's own files: use another --output, or delete the old "
                "run (`--ray --overwrite` replaces every partition)")

    def check_orphans(self, names: list[str], manifests: dict[str, Any], overwrite: bool) -> None:
        """Shards whose manifest is missing, with no layout record: nothing says which config wrote them, so no
        run may adopt them (an overwrite deletes its own)."""
        orphans: dict[str | None, list[str]] = {}
        for name in names:
            if (m := SHARD_RE.match(name)) and manifests.get(manifest_name(m.group(1))) is None:
                if not (overwrite and m.group(1) == self.tag):
                    orphans.setdefault(m.group(1), []).append(name)
        if not orphans:
            return
        tag, shards = sorted(orphans.items(), key=lambda kv: kv[0] != self.tag)[0]
        shown = ", ".join(shards[:2]) + (f" and {len(shards) - 2} more" if len(shards) > 2 else "")
        if tag == self.tag:
            how = "pass --overwrite to delete them and start over, or use another --output"
        else:
            how = (f"this run's --overwrite does not delete them: run partition {tag} with --overwrite (or "
                   "`--ray --overwrite`), or use another --output")
        raise OutputError(f"{self.storage.location} holds shards ({shown}) but no {manifest_name(tag)} and no "
                          f"{LAYOUT_RECORD}: nothing says which config wrote them, so they are not resumed; {how}")

    def record_layout(self, checked: Checked, config_hash: str) -> None:
        """Under the lease lock, just after the lease is written: record this layout and identity if the output
        has no record yet, or replace the record (an --overwrite that check() allowed)."""
        data = layout_record(self.count, config_hash)
        if checked.record is None:
            if self.storage.create_exclusive(LAYOUT_RECORD, data):
                return
            theirs = read_layout(self.storage)  # another writer recorded one first (s3://, where no lock holds)
            if theirs is not None and (theirs.get("num_partitions") != self.count
                                       or theirs.get("config_hash") != config_hash):
                raise OutputError(f"{self.storage.location} was just taken by a run of "
                                  f"{describe_layout(theirs.get('num_partitions'))} (hash "
                                  f"{theirs.get('config_hash')}): use another --output")
        elif checked.record.get("config_hash") != config_hash:
            self.storage.write_atomic(LAYOUT_RECORD, data)

    def differs(self, other: dict[str, Any]) -> str:
        """Which parts of the corpus identity differ, when both sides recorded one."""
        theirs, mine = other.get("identity"), self.identity
        if not isinstance(theirs, dict) or mine is None:
            return f"hash {other.get('config_hash')}"
        keys = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
        return "differs in: " + ", ".join(keys) if keys else f"hash {other.get('config_hash')}"

    def check_layout(self, names: list[str], record: dict[str, Any] | None = None,
                     manifests: dict[str, Any] | None = None) -> None:
        # A single run and a partitioned one, or two partition counts, in one directory would each miss the
        # other's conversations and generate them again: refuse, whether the other layout is recorded, has shards
        # or only a manifest or a live writer. --overwrite does not help: it deletes only this run's own files.
        found = layouts_found(self.storage, names, manifests)
        if (refusal := layout_refusal(self.storage, self.count, record, found)) is not None:
            raise refusal

    def clear(self, names: list[str]) -> None:
        """--overwrite: only this writer's own files (and, for a partition, the combined manifest derived from
        it; never a single run's manifest.json). Manifests last: a kill half-way leaves a directory that still
        names its config."""
        combined = self.tag is not None and MANIFEST in names and is_combined(read_manifest(self.storage))
        for name in sorted(names, key=lambda n: n.startswith("manifest")):
            if self.owns(name) or self.owns_tmp(name) or (combined and name == MANIFEST):
                self.storage.delete(name)
