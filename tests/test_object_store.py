"""Outputs on S3 for real: the fault matrix against a real S3 API server (moto's server mode in a process of its own,
tests/s3_server.py), the writer on boto3's conditional writes (interplay/generator/output/objectstore.py).

Every test gets a bucket of its own on one server and the standard variables pointing at it (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, ...), here and in the writer processes it starts. Writers run the real Generation on the fake
engine: in this process, or in processes of their own (tests/fault_runner.py, tests/writer_runner.py,
`tests/s3_server.py open-together`) where a test kills one or makes two meet.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import require
from fake_engine import fake_open_engines, make_clients
from interplay import cli
from interplay.common.partition import Partition
from interplay.generator.output.lease import LeaseLost
from interplay.generator.output.storage import Storage
from interplay.generator.output.writer import CorpusWriter, OutputError, shard_names
from interplay.generator.runtime.run import Generation

boto3 = require("boto3")
require("moto.server")
from s3_server import S3Server, free_port  # noqa: E402 (after the requirement it needs)

TESTS = Path(__file__).parent
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_MAX_ATTEMPTS": "2"}  # a store that does not answer fails in a second, not after boto3's 5 attempts


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    s3 = S3Server()
    yield s3
    s3.stop()


@pytest.fixture
def uri(server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """s3://<a new bucket>/corpus, with the AWS_* variables pointing at the server (child processes inherit them)
    and the cache directory (engine logs of remote outputs) in tmp_path."""
    for key, value in {**ENV, "AWS_ENDPOINT_URL": server.endpoint, "INTERPLAY_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    bucket = f"bucket-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/corpus"


def objects(uri: str) -> dict[str, str]:
    """Every object under the URI: name -> ETag."""
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
    return {o["Key"][len(prefix) + 1:]: o["ETag"] for o in listed}


def rows(uri: str) -> list[dict[str, Any]]:
    storage = Storage(uri)
    return [r for name in shard_names(storage) for r in storage.read_table(name).to_pylist()]


def indices(uri: str) -> list[int]:
    return sorted(r["conversation_index"] for r in rows(uri))


def generate(config, out: str | Path, *, partition: Partition | None = None, overwrite: bool = False) -> dict:
    return asyncio.run(Generation(config, out, partition=partition, overwrite=overwrite)
                       .run(fake_open_engines(make_clients())))


def config_file(config, tmp_path: Path) -> Path:
    path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    return path


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}


def switch(server: S3Server, what: str, on: bool) -> None:
    urllib.request.urlopen(f"{server.endpoint}/_interplay/{what}?on={int(on)}").read()


# -- exactly once ------------------------------------------------------------------------------------------------

def test_sigkill_mid_run_then_rerun_gives_every_conversation_once(uri, make_config, tmp_path):
    config = make_config(num_dialogues=12, dialogues_per_shard=3, max_in_flight=4)
    # Killed once its second shard is uploaded, conversations in flight and its shard log not rewritten yet.
    killed = subprocess.run([sys.executable, str(TESTS / "fault_runner.py"), str(config_file(config, tmp_path)), uri,
                             "between-shards", "2"], capture_output=True, text=True, timeout=300, env=child_env())
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = indices(uri)  # every shard readable, none twice
    assert len(before) == len(set(before)) == 6
    assert generate(config, uri)["status"] == "complete"
    # Row for row the corpus a local run makes, never interrupted (the fake engine is deterministic).
    generate(config, tmp_path / "local")
    local = {r["conversation_id"]: r for p in (tmp_path / "local").glob("*.parquet")
             for r in pq.read_table(p).to_pylist()}
    assert sorted(r["conversation_index"] for r in rows(uri)) == list(range(12))
    assert {r["conversation_id"]: r["turns"] for r in rows(uri)} == {k: r["turns"] for k, r in local.items()}
    assert not [n for n in objects(uri) if n.startswith(".lease") or ".tmp" in n]


@pytest.mark.parametrize("where", ["lease", "layout"])
def test_two_writers_meeting_at_one_conditional_write_the_store_admits_one(uri, make_config, tmp_path, where):
    """Two writer processes, each held just before it writes its lease until both are there: both have checked the
    output and found it empty, no layout record, no lease. Then both write at once, and the store, not timing,
    admits one: of two writers of one partition, one lease (`lease`); of a single run and a partition, whose leases
    differ, one layout record (`layout`)."""
    config = make_config(num_dialogues=6, dialogues_per_shard=3)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    path = config_file(config, tmp_path)
    second = ["--partition", "0", "2"] if where == "layout" else []
    procs = [subprocess.Popen([sys.executable, str(TESTS / "s3_server.py"), "open-together", str(path), uri,
                               str(barrier), "2", *extra], env=child_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for extra in ([], second)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(out.startswith("met absent") for _, out, _ in results), results  # both found nothing, both wrote
    assert sorted(code for code, _, _ in results) == [0, 3], results
    [(_, won, _)] = [r for r in results if r[0] == 0]
    [(_, _, why)] = [r for r in results if r[0] == 3]
    winner = int(won.split("opened ")[1].split()[0])
    if where == "lease":
        assert f"another writer holds {uri}/.lease.json: pid {winner}" in why
    else:
        assert "was just taken by a run of" in why
    # The winner's corpus, whole, and nothing of the other: a single run's 6, or partition 0's share of them.
    single = where == "lease" or results[0][0] == 0  # `lease`: both are single runs; `layout`: the first is
    names = [n for n in objects(uri) if not n.startswith(".") and n != "README.md"]  # a complete run's card
    assert all(("p000of002" in n) != single for n in names), names
    done = indices(uri)
    assert done == (list(range(6)) if single else sorted(set(done))) and len(done) >= 1
    manifest = json.loads(Storage(uri).read_bytes("manifest.json" if single else "manifest-p000of002.json"))
    assert manifest["status"] == "complete" and manifest["totals"]["num_dialogues"] == len(done)
    assert not [n for n in objects(uri) if n.startswith(".lease")]


def test_a_superseded_writer_past_its_check_cannot_replace_what_its_successor_wrote(uri, make_config):
    """The window a lock-free store leaves: a writer paused after its fence check. Its uploads are conditional, so
    it still cannot renew the lease, replace its successor's manifest or publish over its successor's shard."""
    config = make_config(num_dialogues=4).model_dump(mode="json")
    old = CorpusWriter(uri, config=config, config_hash="h" * 16, dialogues_per_shard=2)
    new = CorpusWriter(uri, config=config, config_hash="h" * 16, dialogues_per_shard=2)  # takes over (this pid)
    assert new.lease.record["epoch"] == old.lease.record["epoch"] + 1
    record = {"conversation_index": 0, "conversation_id": "s00", "seed_id": "s00", "messages": [], "turns": [],
              "outcome": "error", "num_turns": 0}
    new.add(record)
    new.add({**record, "conversation_index": 1})
    new.flush()  # the successor's shard-00000.parquet ...
    new.write_manifest()  # ... and its manifest, which counts it
    old.lease.check = lambda: None  # the old writer passed its check before the takeover, and wakes now
    old.add({**record, "conversation_index": 2})  # a shard of other rows, under the same name
    old.add({**record, "conversation_index": 3})
    with pytest.raises(OutputError, match="appeared while this writer held the output"):
        old.flush()
    with pytest.raises(OutputError, match="was changed by another writer"):
        old.write_manifest()
    with pytest.raises(LeaseLost, match="no longer holds"):
        old.lease.renew()
    new.close(complete=False)
    assert indices(uri) == [0, 1]


# -- overwrite, partitions, readers ------------------------------------------------------------------------------

def test_two_partitions_then_status_and_overwrite_scope(uri, make_config, tmp_path, capsys):
    config = make_config(num_dialogues=8, dialogues_per_shard=2)
    generate(config, uri, partition=Partition(0, 2))
    assert cli.main(["status", uri]) == 1 and "p001of002" in capsys.readouterr().out  # one partition missing
    generate(config, uri, partition=Partition(1, 2))
    assert cli.main(["status", uri]) == 0
    assert "complete" in capsys.readouterr().out and "manifest.json" in objects(uri)  # the combined manifest
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/notes.txt", Body=b"mine")
    # While partition 1 is held by a live writer, its --overwrite is refused and deletes nothing.
    holder = subprocess.Popen([sys.executable, str(TESTS / "writer_runner.py"), str(config_file(config, tmp_path)),
                               uri, "--hold", "--partition", "1", "2"], env=child_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout.readline().startswith("opened"), holder.stderr.read()
        theirs = {n: e for n, e in objects(uri).items() if "p001" in n or n in ("notes.txt", ".layout.json")}
        before = {n: e for n, e in objects(uri).items() if not n.startswith(".lease")}
        with pytest.raises(OutputError, match="another writer holds"):
            Generation(config, uri, partition=Partition(1, 2), overwrite=True)
        assert {n: e for n, e in objects(uri).items() if not n.startswith(".lease")} == before
        # Partition 0's --overwrite replaces partition 0 only, and the combined manifest it makes wrong.
        manifest = generate(config, uri, partition=Partition(0, 2), overwrite=True)
        assert manifest["status"] == "complete" and len(manifest["runs"]) == 1
        after = objects(uri)
        assert {n: e for n, e in after.items() if n in theirs} == theirs and "manifest.json" not in after
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(["status", uri]) == 0 and indices(uri) == list(range(8))


def test_show_report_and_export_read_the_uri(uri, make_config, tmp_path, capsys, monkeypatch):
    generate(make_config(num_dialogues=4), uri)
    assert cli.main(["show", uri, "-n", "2"]) == 0
    assert capsys.readouterr().out.count("=== s0") == 2
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", uri, "--no-plots", "--sample", "4"]) == 0
    assert (tmp_path / "report-corpus" / "report.md").is_file()
    out = tmp_path / "sharegpt.jsonl"
    assert cli.main(["export", uri, "--format", "sharegpt", "--outcome", "all", "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 4


# -- the store failing -------------------------------------------------------------------------------------------

def generate_cli(config, uri: str, tmp_path: Path, monkeypatch, *, client_options: dict | None = None,
                 extra: list[str] = ()) -> tuple[int, list[int]]:
    """`interplay generate` in this process on the fake engine; (exit status, engine starts)."""
    started: list[int] = []

    def open_engines(cfg):
        started.append(1)
        return fake_open_engines(make_clients(**(client_options or {})))(cfg)

    monkeypatch.setattr("interplay.generator.runtime.engine.check_config", lambda config: None)
    monkeypatch.setattr("interplay.generator.runtime.engine.open_engines", open_engines)
    return cli.main(["generate", "--config", str(config_file(config, tmp_path)), "--output", uri, *extra]), started


def test_the_server_going_down_mid_run_is_a_named_error_exit_1_then_a_rerun_resumes(
        uri, server, make_config, tmp_path, monkeypatch, capfd):
    config = make_config(num_dialogues=12, dialogues_per_shard=2, max_in_flight=2)
    write_shard, calls = CorpusWriter._write_shard, []

    def write_then_go_down(self: CorpusWriter, batch: list) -> None:  # the server goes after the 2nd shard
        write_shard(self, batch)
        calls.append(1)
        if len(calls) == 2:
            server.down()

    monkeypatch.setattr(CorpusWriter, "_write_shard", write_then_go_down)
    try:
        code, _ = generate_cli(config, uri, tmp_path, monkeypatch)
    finally:
        server.up()
    monkeypatch.setattr(CorpusWriter, "_write_shard", write_shard)
    err = capfd.readouterr().err
    assert code == 1, err
    [line] = [line for line in err.splitlines() if line.startswith("interplay: stopped:")]
    assert uri in line and "Could not connect to the endpoint URL" in line and "rerun" in line
    assert len(indices(uri)) == len(set(indices(uri))) == 4  # the two shards uploaded before
    code, _ = generate_cli(config, uri, tmp_path, monkeypatch)
    assert code == 0 and indices(uri) == list(range(12))
    # vLLM's log of a remote output: under the cache directory, named by the output; none in the working directory
    [log] = (tmp_path / "cache" / "logs").glob("s3-bucket-*-corpus-*/engine.log")
    assert log.parent.name.startswith(f"s3-{uri.split('/')[2]}-corpus-")
    assert not Path("interplay-logs").exists()


@pytest.mark.parametrize("case", ["unreachable endpoint", "refused credentials", "missing bucket"])
def test_a_store_that_cannot_be_used_is_exit_2_before_any_engine_starts(
        uri, server, make_config, tmp_path, monkeypatch, capfd, case):
    target = uri
    if case == "unreachable endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    elif case == "missing bucket":
        target = "s3://no-such-bucket-here/corpus"
    else:
        switch(server, "auth", True)
    try:
        code, started = generate_cli(make_config(num_dialogues=2), target, tmp_path, monkeypatch)
    finally:
        switch(server, "auth", False)
    err = capfd.readouterr().err
    assert code == 2 and not started, err
    [line] = [line for line in err.splitlines() if line.startswith("interplay: error:")]
    assert target in line
    assert {"unreachable endpoint": "Could not connect to the endpoint URL", "refused credentials": "403",
            "missing bucket": "does not exist"}[case] in line
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    assert objects(uri) == {}  # nothing written


def test_a_store_without_conditional_writes_is_refused_unless_a_single_writer_is_promised(
        uri, server, make_config, tmp_path, monkeypatch, capfd):
    config = make_config(num_dialogues=2)
    switch(server, "conditional", False)
    try:
        code, started = generate_cli(config, uri, tmp_path, monkeypatch)
        err = capfd.readouterr().err
        assert code == 2 and not started and objects(uri) == {}, err
        assert "ignores conditional writes" in err and "--single-writer-i-promise" in err
        code, _ = generate_cli(config, uri, tmp_path, monkeypatch, extra=["--single-writer-i-promise"])
        assert code == 0 and indices(uri) == [0, 1]
    finally:
        switch(server, "conditional", True)


def test_a_shard_of_another_config_that_no_log_names_is_refused_not_adopted(tmp_path, make_config):
    """What a superseded writer's last upload can leave after an --overwrite with a new config (or a shard copied
    in by hand): each shard carries its writer's identity hash, and a resume refuses one of another."""
    generate(make_config(num_dialogues=4, dialogues_per_shard=2), tmp_path / "old")
    config = make_config(num_dialogues=4, dialogues_per_shard=2, conversation={"max_turns": 4})
    generate(config, tmp_path / "new")
    (tmp_path / "new" / "shard-00009.parquet").write_bytes((tmp_path / "old" / "shard-00000.parquet").read_bytes())
    with pytest.raises(OutputError, match="shard-00009.parquet was written by a run of another config"):
        Generation(config, tmp_path / "new")


def test_a_store_pyarrow_reaches_without_conditional_writes_is_refused_unless_promised(make_config):
    import pyarrow.fs as pafs

    config = make_config(num_dialogues=2)
    with pytest.raises(OutputError, match="--single-writer-i-promise"):
        Generation(config, Storage("bucket/corpus", filesystem=pafs._MockFileSystem()))
    store = Storage("bucket/corpus", filesystem=pafs._MockFileSystem(), single_writer=True)
    assert generate(config, store)["status"] == "complete"
