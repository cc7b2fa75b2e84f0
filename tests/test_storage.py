"""Outputs on other filesystems: the writer, resume and `interplay status` through pyarrow's filesystem layer
(an in-memory filesystem stands in for an object store without conditional writes, written under the user's
promise of a single writer; file:// URIs for a local one; tests/test_object_store.py runs a real S3 API server)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fake_engine import fake_open_engines, make_clients
from interplay.common.partition import Partition
from interplay.distributed.status import report
from interplay.generator.output.storage import Storage
from interplay.generator.output.writer import read_manifest, shard_names
from interplay.generator.runtime.run import Generation


def generate(config, out, partition=None) -> dict:
    return asyncio.run(Generation(config, out, partition=partition).run(fake_open_engines(make_clients())))


def test_a_corpus_on_an_object_store_resumes_and_completes(make_config):
    store = Storage("bucket/corpus", filesystem=pafs._MockFileSystem(), single_writer=True)
    config = make_config(num_dialogues=12)
    generate(config, store)
    names = store.names()
    assert "manifest.json" in names and not [n for n in names if n.endswith(".tmp")]
    rows = [r for n in shard_names(store) for r in store.read_table(n).to_pylist()]
    assert sorted(r["conversation_index"] for r in rows) == list(range(12))
    assert read_manifest(store)["totals"]["num_dialogues"] == 12
    # Growing the corpus on the same store generates only the new conversations.
    again = Generation(make_config(num_dialogues=20), store)
    assert again.num_remaining == 8


def test_partitions_on_an_object_store_combine(make_config):
    store = Storage("bucket/parts", filesystem=pafs._MockFileSystem(), single_writer=True)
    config = make_config(num_dialogues=10)
    for i in range(2):
        generate(config, store, Partition(i, 2))
    complete, table = report(store)
    assert complete, table
    assert json.loads(store.read_bytes("manifest.json"))["totals"]["num_dialogues"] == 10


def test_file_uri_is_a_local_directory(tmp_path: Path, make_config):
    out = tmp_path / "uri-out"
    generate(make_config(num_dialogues=5), f"file://{out}")
    assert sum(pq.read_metadata(p).num_rows for p in out.glob("shard-*.parquet")) == 5
    assert (out / "manifest.json").is_file()
