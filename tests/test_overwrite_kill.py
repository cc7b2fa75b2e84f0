"""SIGKILL during `--overwrite`, then the same command again: the partition is rewritten exactly once, and nothing
of the other partition (or anything else in the output) is lost. The killed writer is a real process
(tests/writer_runner.py --kill-at)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fake_engine import fake_open_engines, make_clients
from interplay.common.partition import Partition
from interplay.distributed.status import report
from interplay.generator.runtime.run import Generation

RUNNER = Path(__file__).with_name("writer_runner.py")


def generate(config, out: Path, partition: Partition, *, overwrite: bool = False) -> dict:
    return asyncio.run(Generation(config, out, partition=partition, overwrite=overwrite)
                       .run(fake_open_engines(make_clients())))


def digests(out: Path, keep) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file() and keep(p.name)}


def not_partition_0(name: str) -> bool:
    # The combined manifest and its dataset card describe the whole corpus, which a partition's overwrite changes.
    return "p000of002" not in name and name not in ("manifest.json", "README.md", ".lease.lock")


def shards(out: Path, tag: str) -> list[str]:
    return sorted(p.name for p in out.glob(f"shard-{tag}-*.parquet"))


@pytest.mark.parametrize("point", ["delete", "shard"])
def test_sigkill_during_overwrite_then_rerun(tmp_path, make_config, point):
    config, out = make_config(num_dialogues=20, dialogues_per_shard=3), tmp_path / "out"
    for i in range(2):
        generate(config, out, Partition(i, 2))
    assert report(out)[0]  # writes the combined manifest.json
    (out / "notes.txt").write_text("kept")
    before = shards(out, "p000of002")
    theirs = digests(out, not_partition_0)  # partition 1's files, the layout record, notes.txt

    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNNER.parent), *sys.path])}
    killed = subprocess.run([sys.executable, str(RUNNER), str(path), str(out), "--partition", "0", "2",
                             "--overwrite", "--kill-at", point, "2"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL, f"the kill point was not reached: {killed.stderr}"
    left = shards(out, "p000of002")
    if point == "delete":  # killed between the first and the second shard it deleted
        assert left == before[1:]
    else:  # the old shards all deleted, two new ones published
        assert left == before[:2] and (out / "manifest-p000of002.json").exists()
    for p in out.glob("*.parquet"):
        pq.read_metadata(p)  # every file readable
    assert digests(out, not_partition_0) == theirs

    manifest = generate(config, out, Partition(0, 2), overwrite=True)  # the same command again
    assert manifest["status"] == "complete" and len(manifest["runs"]) == 1  # started over
    assert digests(out, not_partition_0) == theirs
    complete, table = report(out)
    assert complete, table
    indices = sorted(i for p in out.glob("*.parquet")
                     for i in pq.read_table(p).column("conversation_index").to_pylist())
    assert indices == list(range(20))
