"""`interplay status` counts distinct planned conversations, never rows: a rerun with a smaller --num-dialogues, a
repeated shard-log line, a conversation in two shards, partitions run with different --num-dialogues and a
conversation pending retry each keep the corpus from being complete. The fake engine with the real writer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import logged
from fake_engine import fake_open_engines, make_clients
from interplay.common.partition import Partition, partition_of
from interplay.distributed.status import report
from interplay.generator.runtime.run import Generation
from interplay.generator.runtime.scheduler import EngineDead

P0, P1 = Partition(0, 2), Partition(1, 2)


def generate(config, out: Path, partition: Partition | None = None, **client_kw: Any) -> dict:
    generation = Generation(config, out, partition=partition)
    return asyncio.run(generation.run(fake_open_engines(make_clients(**client_kw))))


@contextlib.asynccontextmanager
async def engines_that_fail_to_start(config: Any) -> AsyncIterator[dict]:
    raise RuntimeError("the engine failed to start")
    yield {}  # never reached


def rerun_whose_engine_fails(config, out: Path, partition: Partition) -> None:
    """A rerun that opens the output (its manifest now records this config's num_dialogues) and fails."""
    generation = Generation(config, out, partition=partition)
    with pytest.raises(RuntimeError, match="failed to start"):
        asyncio.run(generation.run(engines_that_fail_to_start))


def owner(seed_id: str) -> Partition:
    return Partition(partition_of(seed_id, 2), 2)


def line(table: str, tag: str) -> str:
    return next(x for x in table.splitlines() if x.startswith(tag))


def test_a_rerun_with_fewer_dialogues_after_an_incomplete_run_is_not_complete(tmp_path: Path, make_config):
    # 20 seeds: partition 0 owns 11 of the first 20 conversations and 24 of the first 40.
    out, big, small = tmp_path / "out", make_config(num_dialogues=40), make_config(num_dialogues=20)
    assert owner("s02") == P0
    # The engine dies at conversation 2's first request, after every other conversation has finished: their 23
    # dialogues take about 0.1 s on an idle machine; 0.3 s was too short beside a CPU-bound job (11 had finished).
    with pytest.raises(EngineDead):
        generate(big, out, P0, dead_on=lambda rid: rid == "s02@0",
                 delay=lambda rid, key: 3.0 if rid.startswith("s02@") else 0.0002)
    indices = {i for e in logged(out, P0.tag) for i in e["indices"]}
    assert 2 not in indices and len(indices) > 11  # more rows than the smaller run plans
    generate(small, out, P1)
    rerun_whose_engine_fails(small, out, P0)
    assert json.loads((out / "manifest-p000of002.json").read_text())["num_planned"] == 11
    complete, table = report(out)
    assert not complete, table
    assert line(table, "p000of002").split()[1:] == ["running", "10/11"]  # distinct planned, never 21/11
    assert "p001of002" in line(table, "p001of002") and "complete" in line(table, "p001of002")
    assert "beyond num_dialogues 20" in table and "corpus: INCOMPLETE, not finished: p000of002" in table
    assert not (out / "manifest.json").exists()
    generate(small, out, P0)  # the engine is back: conversation 2 is generated and the corpus is complete
    complete, table = report(out)
    assert complete and "corpus: complete, 20 dialogues" in table, table


def test_a_conversation_logged_twice_is_counted_once_and_reported(tmp_path: Path, make_config):
    out, config = tmp_path / "out", make_config(num_dialogues=20)
    for part in (P0, P1):
        generate(config, out, part)
    assert report(out)[0]
    (out / "manifest.json").unlink()
    log = out / "shards-p000of002.jsonl"
    original = log.read_bytes()
    first = original.splitlines(keepends=True)[0]
    log.write_bytes(original + first)  # the same line twice
    complete, table = report(out)
    assert not complete, table
    assert line(table, "p000of002").split()[1:] == ["duplicate", "11/11"]  # never 13/11
    shard = json.loads(first)["file"]
    assert f"{shard} is logged 2 times" in table and "corpus: INCOMPLETE, not finished: p000of002" in table
    assert not (out / "manifest.json").exists()
    generate(config, out, P0)  # as the message says: a rerun rewrites the log
    assert log.read_bytes() == original and report(out)[0]

    # Another shard holding a conversation that one already holds: the corpus would have it twice.
    (out / "manifest.json").unlink()
    copy = shard.replace("-00000.", "-00099.")
    shutil.copy(out / shard, out / copy)
    log.write_bytes(original + first.replace(shard.encode(), copy.encode()))
    complete, table = report(out)
    again = json.loads(first)["indices"][0]
    assert not complete and line(table, "p000of002").split()[1:] == ["duplicate", "11/11"], table
    assert f"conversations in more than one of its shards: {again} again in {copy}" in table

    # A shard of partition 0's conversations logged by partition 1: the conversations are in the corpus twice.
    (out / copy).unlink()
    log.write_bytes(original)
    foreign = shard.replace("p000of002", "p001of002").replace("-00000.", "-00099.")
    shutil.copy(out / shard, out / foreign)
    with open(out / "shards-p001of002.jsonl", "ab") as f:
        f.write(first.replace(shard.encode(), foreign.encode()))
    complete, table = report(out)
    num_rows = json.loads(first)["num_rows"]
    assert not complete and line(table, "p001of002").split()[1:] == ["duplicate", f"{9 + num_rows}/9"], table
    assert f"also in another partition's log: {num_rows} in {foreign}" in table
    assert "more than the 9 it owns" in table and not (out / "manifest.json").exists()


def test_a_single_run_with_a_repeated_log_line_is_not_complete(tmp_path: Path, make_config):
    out = tmp_path / "out"
    generate(make_config(num_dialogues=10), out)
    assert report(out) == (True, "single run: complete, 10 dialogues")
    with open(out / "shards.jsonl", "ab") as f:
        f.write((out / "shards.jsonl").read_bytes().splitlines(keepends=True)[-1])
    complete, text = report(out)
    assert not complete and text.startswith("single run: duplicate, 10/10 dialogues; ") and "logged 2 times" in text


def test_partitions_run_with_different_num_dialogues_are_not_complete(tmp_path: Path, make_config):
    out = tmp_path / "out"
    assert generate(make_config(num_dialogues=20), out, P0)["status"] == "complete"
    assert generate(make_config(num_dialogues=40), out, P1)["status"] == "complete"
    complete, table = report(out)
    assert not complete, table
    assert "different --num-dialogues (p000of002: 20, p001of002: 40)" in table
    assert not (out / "manifest.json").exists()
    generate(make_config(num_dialogues=40), out, P0)
    assert report(out)[0]


def test_a_conversation_pending_retry_is_not_complete(tmp_path: Path, make_config):
    out, big, small = tmp_path / "out", make_config(num_dialogues=40), make_config(num_dialogues=20)
    assert owner("s05") == P0
    manifest = generate(big, out, P0, fail_on=lambda rid: rid == "s05@0")  # its first attempt fails
    assert manifest["failures"]["num_pending_retry"] == 1
    generate(small, out, P1)
    rerun_whose_engine_fails(small, out, P0)  # more rows logged than the rerun plans; conversation 5 not one
    complete, table = report(out)
    assert not complete, table
    assert line(table, "p000of002").split()[1:] == ["running", "10/11"]
    assert "p000of002: 1 conversation pending retry (failures-p000of002.jsonl)" in table
    generate(small, out, P0)  # the retry succeeds
    assert report(out)[0]
