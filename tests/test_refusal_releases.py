"""Every refusal releases what it took: a run refused after it took the output's lease (an unreadable shard found
at resume, a failed manifest write) gives the lease back, so another process, on this host or another, can take
the output at once instead of being refused until the heartbeat lapses (60 s)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fake_engine import fake_open_engines, make_clients
from interplay.generator.output import writer as writer_module
from interplay.generator.output.lease import Lease, LeaseLost
from interplay.generator.output.storage import Storage
from interplay.generator.output.writer import CorpusWriter, OutputError
from interplay.generator.runtime.run import Generation

RUNNER = Path(__file__).with_name("writer_runner.py")


def generate(config, out: Path) -> dict:
    return asyncio.run(Generation(config, out).run(fake_open_engines(make_clients())))


def run_elsewhere(config, out: Path) -> subprocess.CompletedProcess:
    """The same run in another live process (tests/writer_runner.py): refused (exit 3) while a lease is held."""
    path = out.parent / "config.json"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNNER.parent), *sys.path])}
    return subprocess.run([sys.executable, str(RUNNER), str(path), str(out)], env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_resume_refused_for_an_unreadable_shard_releases_the_lease(tmp_path, make_config):
    config, out = make_config(num_dialogues=10), tmp_path / "out"
    generate(make_config(num_dialogues=5), out)
    shard = sorted(out.glob("shard-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:40])  # cut short: its footer no longer matches the shard log
    with pytest.raises(OutputError, match="not a readable shard"):
        Generation(config, out)
    assert not (out / ".lease.json").exists()
    shard.rename(tmp_path / shard.name)  # what the message says to do
    # Another process takes the output at once: this process is alive and on this host, so a lease it had left
    # behind would refuse it (exit 3) for 60 s.
    done = run_elsewhere(config, out)
    assert done.returncode == 0, done.stderr
    assert not (out / ".lease.json").exists()


def test_a_failure_after_resume_releases_the_lease(tmp_path, make_config, monkeypatch):
    out = tmp_path / "out"
    config = make_config(num_dialogues=10).model_dump(mode="json")

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer_module.CorpusWriter, "write_manifest", full_disk)
    with pytest.raises(OSError, match="No space left"):
        CorpusWriter(out, config=config, config_hash="h" * 16, dialogues_per_shard=2)
    assert not (out / ".lease.json").exists()


def test_a_lease_whose_read_back_fails_is_given_back(tmp_path, monkeypatch):
    storage = Storage(tmp_path)

    def lost(self):
        raise LeaseLost("read back failed")

    monkeypatch.setattr(Lease, "check", lost)
    with pytest.raises(LeaseLost):
        Lease.acquire(storage, ".lease.json", heartbeat=False)
    assert not (tmp_path / ".lease.json").exists()
