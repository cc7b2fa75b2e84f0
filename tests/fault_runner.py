"""Run one generation with the fake engine and SIGKILL this process at a chosen point (for tests/test_faults.py).

    python tests/fault_runner.py CONFIG_JSON OUT_DIR POINT [N]

POINT (N counts from 1 and defaults to 1):
    request                 when the N-th request of this run is sent
    before-shard            on entering the write of the N-th shard of this run, nothing of it on disk yet
    mid-shard-write         N-th shard: its rows are in the temporary file, the Parquet footer is not
    after-shard-rename      N-th shard: renamed into place, the shard log does not name it yet
    mid-log-append          N-th shard: half of its line is appended to the shard log
    mid-failure-append      conversations FAIL_ONCE fail; half of the N-th failure line is appended to the failure log
    mid-manifest-write      N-th manifest write: the temporary file is complete, not renamed yet
    between-shards          N-th shard, its log line and the manifest written, nothing of the next shard yet
    before-final-manifest   every shard written, the final manifest not yet

The manifest is rewritten after every shard here (MANIFEST_EVERY_S = 0), so that every write can be killed.
A kill point that is never reached lets the run finish with exit status 0, so the caller can tell.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pyarrow.parquet as pq

from fake_engine import fake_open_engines, make_clients
from interplay.generator.config import GenerateConfig
from interplay.generator.output import writer
from interplay.generator.output.storage import Storage
from interplay.generator.output.writer import MANIFEST, SHARD_RE, CorpusWriter
from interplay.generator.runtime.run import Generation

POINTS = ("request", "before-shard", "mid-shard-write", "after-shard-rename", "mid-log-append",
          "mid-failure-append", "mid-manifest-write", "between-shards", "before-final-manifest", "none")
# The requests that fail under mid-failure-append: the first turns of conversations 3, 7 and 12.
FAIL_ONCE = ("s03@0", "s07@0", "s12@0")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def nth(n: int):
    """A counter that is true on its n-th call."""
    count = {"calls": 0}

    def hit() -> bool:
        count["calls"] += 1
        return count["calls"] == n
    return hit


def install(point: str, n: int) -> dict:
    """Patch the writer (this process only) so that it dies at `point`; returns fake-client options."""
    hit = nth(n)
    writer.MANIFEST_EVERY_S = 0
    if point == "request":
        return {"on_submit": lambda request_id: die() if hit() else None}
    if point == "before-shard":
        write_shard = CorpusWriter._write_shard

        def write_then(self: CorpusWriter, batch: list) -> None:
            if hit():
                die()
            write_shard(self, batch)
        CorpusWriter._write_shard = write_then
    elif point == "between-shards":
        write_shard = CorpusWriter._write_shard

        def write_then(self: CorpusWriter, batch: list) -> None:
            write_shard(self, batch)
            if hit():
                die()
        CorpusWriter._write_shard = write_then
    elif point in ("mid-log-append", "mid-failure-append"):
        append = Storage.append
        log_prefix = "shards" if point == "mid-log-append" else "failures"

        def append_half(self: Storage, name: str, data: bytes) -> None:
            if name.startswith(log_prefix) and hit():
                append(self, name, data[:len(data) // 2])
                die()
            append(self, name, data)
        Storage.append = append_half
        if point == "mid-failure-append":
            return {"fail_on": lambda request_id: request_id in FAIL_ONCE}
    elif point == "mid-shard-write":
        class DyingWriter(pq.ParquetWriter):
            def close(self) -> None:  # the row group is written; the footer, written by close, is not
                if hit():
                    die()
                super().close()
        pq.ParquetWriter = DyingWriter  # the writer module looks it up through pyarrow.parquet at call time
    elif point in ("after-shard-rename", "mid-manifest-write"):
        publish = Storage._publish  # writes reach their final name only through here

        def publish_then(self: Storage, tmp: str, name: str, **kw) -> None:
            if point == "mid-manifest-write" and name == MANIFEST and hit():
                die()  # the new manifest is written under its temporary name, not yet renamed
            publish(self, tmp, name, **kw)
            if point == "after-shard-rename" and SHARD_RE.match(name) and hit():
                die()
        Storage._publish = publish_then
    elif point == "before-final-manifest":
        write_manifest = CorpusWriter.write_manifest

        def write_then(self: CorpusWriter, *, complete: bool = False, **kw) -> None:
            if complete:
                die()
            write_manifest(self, complete=complete, **kw)
        CorpusWriter.write_manifest = write_then
    elif point != "none":
        raise SystemExit(f"unknown kill point {point!r}; one of {', '.join(POINTS)}")
    return {}


def main(argv: list[str]) -> int:
    config_path, out, point, *rest = argv
    config = GenerateConfig.model_validate(json.loads(Path(config_path).read_text()))
    client_options = install(point, int(rest[0]) if rest else 1)
    generation = Generation(config, out)
    manifest = asyncio.run(generation.run(fake_open_engines(make_clients(**client_options))))
    return 0 if manifest["status"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
