"""One layout per output, decided once (.layout.json), and what a resume may adopt.

Each test here reproduces a way an output was mixed or adopted wrongly before the layout record existed: a
writer of another layout or config opened beside one that had taken its lease but not written a shard yet, a
partition's --overwrite that deleted a running single run's manifest, shards with no manifest resumed by any
config, and a conversation in two shards carried forward by a resume.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from fake_engine import fake_open_engines, make_clients
from interplay.common.partition import Partition
from interplay.generator.output.checks import Ownership
from interplay.generator.output.layout import clear_partitions
from interplay.generator.output.storage import Storage
from interplay.generator.output.writer import CorpusWriter, OutputError
from interplay.generator.runtime.run import Generation

RUNNER = Path(__file__).with_name("writer_runner.py")
LAYOUT_RECORD = ".layout.json"  # layout.LAYOUT_RECORD, spelled out so this file also runs against older code


def generate(config, out: Path, *, partition: Partition | None = None, overwrite: bool = False) -> dict:
    generation = Generation(config, out, partition=partition, overwrite=overwrite)
    return asyncio.run(generation.run(fake_open_engines(make_clients())))


def indices(out: Path) -> list[int]:
    return sorted(i for p in out.glob("*.parquet") for i in pq.read_table(p).column("conversation_index").to_pylist())


def corpus_files(out: Path) -> dict[str, bytes]:
    """Every file but the leases (whose heartbeats change them) and their lock."""
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".lease")}


def holding(config, out: Path, *args: str) -> subprocess.Popen:
    """A live writer in another process that has opened `out` (its lease taken, its manifest written) and writes
    nothing more until it is killed."""
    path = out.parent / f"config-{len(list(out.parent.glob('config-*.json')))}.json"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNNER.parent), *sys.path])}
    proc = subprocess.Popen([sys.executable, str(RUNNER), str(path), str(out), "--hold", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("opened"), proc.stderr.read()
    return proc


def assert_open(proc: subprocess.Popen, lease: Path) -> None:
    """`proc` is alive and holds `lease` at this moment."""
    assert proc.poll() is None
    record = json.loads(lease.read_text())
    assert record["pid"] == proc.pid and record["host"] == socket.gethostname()


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def writer(out: Path, config_hash: str, tag: str | None = None, **kwargs: Any) -> CorpusWriter:
    return CorpusWriter(out, config={"seed": 7}, config_hash=config_hash, dialogues_per_shard=2,
                        partition_tag=tag, **kwargs)


def while_opening(monkeypatch: pytest.MonkeyPatch, out: Path, first: dict[str, Any],
                  then: Callable[[], Any]) -> Any:
    """Open a writer with `first`'s arguments and, at the moment it holds its lease but has written nothing else
    of its own (no manifest, no shard): call `then` and return what it returned, or the OutputError it raised.
    Two writers started in the same instant interleave like this."""
    seen: dict[str, Any] = {}
    resume = CorpusWriter._resume

    def interleaved(self: CorpusWriter):
        if not seen:  # the first writer only, not the one opened in `then`
            seen["result"] = None
            lease = json.loads((out / f".lease-{self.tag}.json" if self.tag else out / ".lease.json").read_text())
            assert lease["owner"] == self.lease.owner  # this writer holds its lease ...
            assert not (out / self.manifest_name).exists() and not list(out.glob("*.parquet"))  # ... and no more
            try:
                seen["result"] = then()
            except OutputError as e:
                seen["result"] = e
        return resume(self)

    monkeypatch.setattr(CorpusWriter, "_resume", interleaved)
    opened = writer(out, **first)
    monkeypatch.setattr(CorpusWriter, "_resume", resume)
    opened.close(complete=False)
    if isinstance(seen["result"], CorpusWriter):  # accepted: let it go too
        seen["result"].close(complete=False)
    return seen["result"]


# -- one layout, one identity ------------------------------------------------------------------------------------

def test_a_single_run_open_before_its_first_shard_refuses_a_partitioned_run(tmp_path, make_config):
    config, out = make_config(num_dialogues=10), tmp_path / "out"
    holder = holding(config, out)
    try:
        assert_open(holder, out / ".lease.json")  # the single run is open at this moment ...
        assert not list(out.glob("*.parquet"))    # ... and has not written a shard yet
        before = corpus_files(out)
        for partition in (Partition(0, 2), Partition(1, 2)):
            with pytest.raises(OutputError, match="a single run") as refused:
                Generation(config, out, partition=partition)
            assert "2 partitions" in str(refused.value) and "another --output" in str(refused.value)
        assert_open(holder, out / ".lease.json")
        assert corpus_files(out) == before and not list(out.glob(".lease-p*"))  # nothing of the refused runs
    finally:
        stop(holder)
    # The record stands with the single run's shards or without them: still refused once the holder is gone.
    with pytest.raises(OutputError, match="a single run"):
        Generation(config, out, partition=Partition(0, 2))
    assert generate(config, out)["status"] == "complete" and indices(out) == list(range(10))


@pytest.mark.parametrize(("first", "second"), [("p000of002", "p000of003"), ("p000of002", None),
                                                (None, "p001of002")])
def test_two_layouts_opened_together_the_second_is_refused(tmp_path, monkeypatch, first, second):
    out = tmp_path / "out"
    result = while_opening(monkeypatch, out, {"config_hash": "a" * 16, "tag": first},
                           lambda: writer(out, "a" * 16, second))
    assert isinstance(result, OutputError) and "one layout" in str(result), result
    record = json.loads((out / LAYOUT_RECORD).read_text())
    assert record["num_partitions"] == (None if first is None else int(first[-3:]))
    assert record["config_hash"] == "a" * 16


def test_two_configs_opened_together_the_second_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "out"
    result = while_opening(monkeypatch, out, {"config_hash": "a" * 16, "tag": "p000of002"},
                           lambda: writer(out, "b" * 16, "p001of002"))
    assert isinstance(result, OutputError) and "different config" in str(result), result
    assert not list(out.glob("*p001of002*"))  # the refused partition wrote nothing
    # Without overwrite, and with it: the other partition's files are the recorded corpus.
    writer(out, "a" * 16, "p000of002").close(complete=False)  # its manifest now exists too
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="different config"):
            writer(out, "b" * 16, "p001of002", overwrite=overwrite)


def test_a_record_without_shards_refuses_another_config(tmp_path):
    """A single run killed after it recorded its layout, before its manifest: the record alone decides."""
    out = tmp_path / "out"
    writer(out, "a" * 16).close(complete=False)
    (out / "manifest.json").unlink()
    with pytest.raises(OutputError, match=f"different config .*{LAYOUT_RECORD}"):
        writer(out, "b" * 16)
    writer(out, "a" * 16).close(complete=False)  # the recorded config resumes
    replaced = writer(out, "b" * 16, overwrite=True)  # the same layout's --overwrite replaces the record
    replaced.close(complete=False)
    assert json.loads((out / LAYOUT_RECORD).read_text())["config_hash"] == "b" * 16


# -- --overwrite -------------------------------------------------------------------------------------------------

def test_a_partitions_overwrite_with_another_config_keeps_a_running_single_runs_manifest(tmp_path, make_config):
    config, out = make_config(num_dialogues=10), tmp_path / "out"
    other = make_config(num_dialogues=10, seed=99)
    holder = holding(config, out)
    try:
        assert_open(holder, out / ".lease.json")
        before = corpus_files(out)
        assert "manifest.json" in before
        with pytest.raises(OutputError, match="a single run"):
            Generation(other, out, partition=Partition(0, 2), overwrite=True)
        assert_open(holder, out / ".lease.json")
        assert corpus_files(out) == before  # manifest.json and the record, byte for byte
    finally:
        stop(holder)


def test_overwrite_deletes_only_a_combined_manifest(tmp_path, make_config):
    """Even where no layout record stands (an output written before it), a partition's --overwrite, or
    `--ray --overwrite`, deletes manifest.json only when it is the combined manifest `interplay status` wrote."""
    out = tmp_path / "out"
    out.mkdir()
    single = {"format": "interplay.corpus/1", "status": "running", "config_hash": "a" * 16, "runs": []}
    (out / "manifest.json").write_text(json.dumps(single))
    storage = Storage(out)
    Ownership(storage, "p000of002", None).clear(storage.names())
    assert json.loads((out / "manifest.json").read_text()) == single
    with pytest.raises(OutputError, match="another layout"):
        clear_partitions(out, 2)
    assert (out / "manifest.json").exists()
    (out / "manifest.json").write_text(json.dumps({**single, "partitions": {"p000of002": {}, "p001of002": {}}}))
    Ownership(storage, "p000of002", None).clear(storage.names())
    assert not (out / "manifest.json").exists()


def test_ray_overwrite_replaces_the_record_of_its_own_layout(tmp_path, make_config):
    config, out = make_config(num_dialogues=10), tmp_path / "out"
    for i in range(2):
        generate(config, out, partition=Partition(i, 2))
    assert json.loads((out / LAYOUT_RECORD).read_text())["num_partitions"] == 2
    other = make_config(num_dialogues=10, seed=99)
    with pytest.raises(OutputError, match="different config"):  # one partition's overwrite may not
        Generation(other, out, partition=Partition(0, 2), overwrite=True)
    clear_partitions(out, 2)
    assert not (out / LAYOUT_RECORD).exists() and not list(out.glob("*.parquet"))
    for i in range(2):
        generate(other, out, partition=Partition(i, 2))
    recorded = json.loads((out / LAYOUT_RECORD).read_text())
    assert recorded["config_hash"] == json.loads((out / "manifest-p000of002.json").read_text())["config_hash"]
    assert indices(out) == list(range(10))


# -- what a resume adopts ----------------------------------------------------------------------------------------

def test_shards_without_a_manifest_or_a_record_are_refused_not_adopted(tmp_path, make_config):
    seven, out = make_config(num_dialogues=10), tmp_path / "out"
    generate(seven, out)
    (out / "manifest.json").unlink()
    (out / LAYOUT_RECORD).unlink(missing_ok=True)  # as an output written before the record existed
    before = corpus_files(out)
    for config in (make_config(num_dialogues=10, seed=99), seven):  # any config, even the same one
        with pytest.raises(OutputError, match="no manifest.json") as refused:
            Generation(config, out)
        assert "--overwrite" in str(refused.value) and "another --output" in str(refused.value)
        assert corpus_files(out) == before and not (out / ".lease.json").exists()
    manifest = generate(make_config(num_dialogues=10, seed=99), out, overwrite=True)  # what the message says
    assert manifest["status"] == "complete" and indices(out) == list(range(10))


def test_shards_whose_manifest_is_missing_resume_only_under_the_recorded_config(tmp_path, make_config):
    seven, out = make_config(num_dialogues=10), tmp_path / "out"
    generate(make_config(num_dialogues=6), out)
    (out / "manifest.json").unlink()  # the record still names the config that wrote the shards
    with pytest.raises(OutputError, match="different config"):
        Generation(make_config(num_dialogues=10, seed=99), out)
    assert generate(seven, out)["status"] == "complete" and indices(out) == list(range(10))


def test_an_index_in_two_shards_is_refused_at_resume_naming_both(tmp_path, make_config):
    config, out = make_config(num_dialogues=10), tmp_path / "out"
    generate(config, out)
    shutil.copy(out / "shard-00000.parquet", out / "shard-00007.parquet")  # the log does not name it
    with pytest.raises(OutputError, match="in two shards") as refused:
        Generation(config, out)
    assert "shard-00000.parquet" in str(refused.value) and "shard-00007.parquet" in str(refused.value)
    assert not (out / ".lease.json").exists()  # the refusal gave the lease back
    (out / "shard-00007.parquet").unlink()  # what the message says
    assert generate(config, out)["status"] == "complete" and indices(out) == list(range(10))


# -- create-if-absent --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["local", "object store"])
def test_create_exclusive(tmp_path, where):
    storage = (Storage(tmp_path) if where == "local"
               else Storage("bucket/out", filesystem=pafs._MockFileSystem()))
    storage.makedirs()
    assert storage.create_exclusive("x.json", b"first")
    assert not storage.create_exclusive("x.json", b"second")
    assert storage.read_bytes("x.json") == b"first" and storage.names() == ["x.json"]
