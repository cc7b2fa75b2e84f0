"""May this run write to this output? Every check reads only, so a refused run leaves the directory as it was.

A writer owns its own files (a single run: shard-NNNNN.parquet, shards.jsonl, failures.jsonl, manifest.json; a
partition: the same names tagged pIIIofNNN). It refuses an output that holds another layout, another config's
manifest, or files that are not interplay's; `--overwrite` deletes only what it owns.
"""

from __future__ import annotations

import json
import os
from typing import Any

from interplay.generator.output.layout import (
    MANIFEST,
    PARTITION_MANIFEST_RE,
    SHARD_RE,
    OutputError,
    failure_log_name,
    is_interplay_name,
    log_name,
)
from interplay.generator.output.storage import Storage, as_storage


def read_manifest(out_dir: str | os.PathLike[str] | Storage, name: str = MANIFEST) -> dict[str, Any] | None:
    storage = as_storage(out_dir)
    try:
        data = storage.read_bytes(name)
        return None if data is None else json.loads(data)
    except (OSError, ValueError) as e:
        raise OutputError(f"{storage.path(name)} is unreadable ({e}); move it away to start over") from None


class Ownership:
    """One writer's files in an output: `tag` is its partition ("p003of008"), None for a single run."""

    def __init__(self, storage: Storage, tag: str | None, identity: dict[str, Any] | None):
        self.storage, self.tag, self.identity = storage, tag, identity
        self.manifest_name = MANIFEST if tag is None else f"manifest-{tag}.json"
        self.log_name = log_name(tag)
        self.failure_log_name = failure_log_name(tag)

    def owns(self, name: str) -> bool:
        """Is `name` one of this writer's shards, its shard or failure log or its manifest?"""
        match = SHARD_RE.match(name)
        return (name in (self.manifest_name, self.log_name, self.failure_log_name)
                or (match is not None and match.group(1) == self.tag))

    def owns_tmp(self, name: str) -> bool:
        """A partial file of ours, left by a killed run: never part of the corpus."""
        return name.startswith(".") and name.endswith(".tmp") and self.owns(name[1:].removesuffix(".tmp"))

    def check(self, names: list[str], config_hash: str, overwrite: bool) -> dict[str, Any] | None:
        """Refuse an output this run may not write to; returns this writer's own manifest, if any."""
        storage, out = self.storage, self.storage.location
        self.check_layout(names)
        manifest = read_manifest(storage, self.manifest_name)
        # The combined manifest of a partitioned run is derived from the partitions' (interplay status writes
        # it): an overwrite of one partition makes it wrong, and deletes it.
        derived = MANIFEST if self.tag is not None else None
        others = {n: read_manifest(storage, n) for n in names
                  if (n == MANIFEST or PARTITION_MANIFEST_RE.match(n)) and n != self.manifest_name}
        foreign = [n for n in names if not is_interplay_name(n)]
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
        return manifest

    def differs(self, other: dict[str, Any]) -> str:
        """Which parts of the corpus identity differ, when both sides recorded one."""
        theirs, mine = other.get("identity"), self.identity
        if not isinstance(theirs, dict) or mine is None:
            return f"hash {other.get('config_hash')}"
        keys = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
        return "differs in: " + ", ".join(keys) if keys else f"hash {other.get('config_hash')}"

    def check_layout(self, names: list[str]) -> None:
        # A single run and a partitioned one, or two partition counts, in one directory would each miss the
        # other's conversations and generate them again: refuse. --overwrite does not help: it deletes only
        # this run's own files.
        tags = {m.group(1) for n in names if (m := SHARD_RE.match(n))}
        tags |= {m.group(1) for n in names if (m := PARTITION_MANIFEST_RE.match(n))}
        counts = {t.split("of")[1] if t else None for t in tags}
        mine = self.tag.split("of")[1] if self.tag else None
        if counts - {mine}:
            layout = ", ".join(sorted("a single run" if c is None else f"{int(c)} partitions" for c in counts))
            raise OutputError(f"{self.storage.location} holds shards of {layout}; this run is "
                              + ("a single run" if mine is None else f"{int(mine)} partitions")
                              + ": use the same layout, or another --output")

    def clear(self, names: list[str]) -> None:
        """--overwrite: only this writer's own files (and, for a partition, the combined manifest derived from
        it). Manifests last: a kill half-way leaves a directory that still names its config."""
        for name in sorted(names, key=lambda n: n.startswith("manifest")):
            if self.owns(name) or self.owns_tmp(name) or (self.tag is not None and name == MANIFEST):
                self.storage.delete(name)
