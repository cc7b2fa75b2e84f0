"""topology: server against a real `vllm serve` (the installed CPU build, SmolLM2, tests/vllm_server.py), through
the real command line with configs/embedded-server.yaml: 8 dialogues in each protocol with the corpus checks of
the in-process tests; a SIGKILL of the server mid-run (exit 1, naming the server) and the rerun after its restart
(every conversation exactly once); a wrong model name and an unreachable address (exit 2, one line each, nothing
written). One server start, one restart, six runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import require_model
from s3_server import free_port
from test_vllm_faults import check_consistent, snapshot
from vllm_server import VllmServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NUM = 8
RUN_TIMEOUT_S = 1800  # seconds: a busy 2-core machine, not a performance bound


def args(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "interplay", "generate", "--config", str(ROOT / "configs" / "embedded-server.yaml"),
            "--num-dialogues", str(NUM), "--set", f"server.base_url={url}", "--set", "conversation.max_turns=4",
            "--set", "user.sampling.max_tokens=32", "--set", "recommender.sampling.max_tokens=48",
            "--set", "dialogues_per_shard=2", "--set", "max_in_flight=4", *extra]


def run(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*args(url, *extra), "--output", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_model()
    started = VllmServer(tmp_path_factory.mktemp("vllm-serve") / "server.log")
    yield started
    started.stop()


def corpus_rows(out: Path) -> tuple[list[dict], dict]:
    stage = snapshot(out)
    check_consistent(stage)
    return stage["rows"], stage["manifest"]


@pytest.mark.parametrize("protocol", ["reference_free", "reference"])
def test_eight_dialogues_through_the_server(server: VllmServer, tmp_path: Path, protocol: str):
    proc = run(server.url, tmp_path / protocol, "--set", f"protocol={protocol}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows, manifest = corpus_rows(tmp_path / protocol)
    assert sorted(r["conversation_index"] for r in rows) == list(range(NUM))
    assert manifest["status"] == "complete" and manifest["totals"]["num_dialogues"] == NUM
    assert {r["protocol"] for r in rows} == {protocol}
    assert {r["user_model"] for r in rows} == {server.model}
    # The counts are the server's (usage), and they add up to the manifest's.
    turns = [t for r in rows for t in r["turns"]]
    assert all(t["num_output_tokens"] <= (32 if t["role"] == "user" else 48) for t in turns)
    assert sum(t["num_output_tokens"] for t in turns) == sum(
        manifest["totals"]["tokens"][role]["output"] for role in ("user", "recommender")) > 0
    # Later turns re-send the earlier history as token ids: the server's prefix cache serves part of it.
    assert manifest["totals"]["cached_prompt_share"]["user"] > 0.2
    assert manifest["identity"]["served.user"] == server.model
    if protocol == "reference":  # the teacher's constrained replies went through: each names a candidate
        for row in rows:
            for turn in (t for t in row["turns"] if t["role"] == "recommender"):
                assert set(turn["item_ids"]) & set(turn["candidate_item_ids"]), turn["text"]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("interplay: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


def test_a_model_the_server_does_not_serve_exits_2_with_one_line(server: VllmServer, tmp_path: Path):
    line = one_error_line(run(server.url, tmp_path / "out", "--set", "server.model=no-such-model"))
    assert line == (f"interplay: error: server.model: 'no-such-model' is not served at {server.url} "
                    f"(it serves: {server.model})")
    assert not (tmp_path / "out").exists()  # refused before the output was opened


def test_an_unreachable_server_exits_2_with_one_line(tmp_path: Path):
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    line = one_error_line(run(url, tmp_path / "out"))
    assert line.startswith(f"interplay: error: server.base_url: cannot reach the server at {url} (ConnectError")
    assert not (tmp_path / "out").exists()


def test_a_server_killed_mid_run_stops_the_run_naming_it_and_the_rerun_completes(server: VllmServer,
                                                                                 tmp_path: Path):
    """Last in this module: it takes the server down and starts it again."""
    out = tmp_path / "corpus"
    # Two in flight and two per shard: the kill lands with most of the corpus to do. Few, short retries: the
    # server stays down until the run gives up.
    fast = ["--set", "max_in_flight=2", "--set", "server.max_retries=2", "--set", "server.backoff_s=0.5"]
    proc = subprocess.Popen([*args(server.url, *fast), "--output", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not list(out.glob("*.parquet")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run ended or stalled before its first shard:\n{proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    server.kill()
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 1, stderr[-3000:]
    assert f"interplay: stopped: the server at {server.url} cannot be reached any more" in stderr, stderr[-3000:]
    killed = snapshot(out)
    check_consistent(killed)
    assert 2 <= len(killed["rows"]) < NUM

    server.start()
    rerun = run(server.url, out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{len(killed['rows'])} of {NUM} dialogues already in" in rerun.stderr
    rows, manifest = corpus_rows(out)
    assert sorted(r["conversation_index"] for r in rows) == list(range(NUM))  # exactly once
    assert manifest["status"] == "complete"
    # The conversations in flight at the kill were abandoned, not failed: none used an attempt.
    assert not (out / "failures.jsonl").exists() or not (out / "failures.jsonl").read_text().strip()
    assert json.loads((out / "manifest.json").read_text())["totals"]["num_dialogues"] == NUM
