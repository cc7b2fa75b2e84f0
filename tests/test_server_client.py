"""The server role client (generator/runtime/server.py) against a small real HTTP server (completions_stub.py):
what is retried and what is not, the backoff, what a bad answer becomes, and what a dead server stops. Fast: no
model, no vLLM."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from completions_stub import CompletionsStub, completion
from interplay.generator.runtime.scheduler import EngineDead
from interplay.generator.runtime.server import (
    MAX_BACKOFF_S,
    RetryPolicy,
    ServerRequestError,
    ServerRoleClient,
    http_client,
)


class WordTokenizer:
    """Enough of a tokenizer for ServerRoleClient: these tests send token ids they make themselves."""
    all_special_tokens: list[str] = []

    def convert_tokens_to_ids(self, token: str) -> int:
        return 0


def settings(url: str, **over: Any) -> dict[str, Any]:
    return {"base_url": url, "model": "m", "api_key_env": None, "timeout_s": 5.0, "max_retries": 3,
            "backoff_s": 0.01, **over}


def generate(stub_url: str, *, regex: str | None = None, seed: int | None = None, **over: Any) -> Any:
    async def go() -> Any:
        s = settings(stub_url, **over)
        async with http_client(s, max_connections=4) as http:
            client = ServerRoleClient("user", http, s, WordTokenizer(), {"temperature": 0.7, "max_tokens": 8},
                                      max_model_len=2048, kv_cache_tokens=None, rng=random.Random(0))
            return await client.generate("c@0", [1, 2, 3], seed, **({"regex": regex} if regex else {}))

    return asyncio.run(go())


@pytest.fixture
def stub():
    server = CompletionsStub()
    yield server
    server.stop()


def test_429_and_5xx_are_retried_until_an_answer(stub: CompletionsStub):
    stub.script = [(429, {"error": "busy"}), (500, "oops"), (503, {"error": "restarting"}),
                   (200, completion("hello", prompt_tokens=3, completion_tokens=2, cached=2))]
    result = generate(stub.url)
    assert (result.text, result.num_prompt_tokens, result.num_output_tokens, result.num_cached_tokens) == (
        "hello", 3, 2, 2)
    assert len(stub.requests) == 4


def test_retries_end_in_a_failed_request_naming_the_server(stub: CompletionsStub):
    stub.script = [(502, "bad gateway")] * 4
    with pytest.raises(ServerRequestError, match=rf"server at {stub.url} did not answer it after 4 tries "
                                                 r"\(status 502: bad gateway\)"):
        generate(stub.url)
    assert len(stub.requests) == 4


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_4xx_is_not_retried(stub: CompletionsStub, status: int):
    stub.script = [(status, {"error": {"message": "This model's maximum context length is 2048 tokens"}})]
    with pytest.raises(ServerRequestError, match=rf"refused it \(status {status}: .*maximum context length"):
        generate(stub.url)
    assert len(stub.requests) == 1


def test_a_timeout_is_retried(stub: CompletionsStub):
    stub.delay_s = 3.0  # every answer comes after the client stopped waiting
    with pytest.raises(ServerRequestError, match=r"did not answer it after 2 tries \(\w*Timeout"):
        generate(stub.url, timeout_s=0.3, max_retries=1)


def test_a_server_that_cannot_be_reached_stops_the_run_naming_it():
    stub = CompletionsStub()
    url = stub.url
    stub.stop()  # its port now refuses connections, as a killed server's does
    with pytest.raises(EngineDead, match=rf"server at {url} cannot be reached any more \(during a user turn, "
                                         r"after 3 tries: ConnectError"):
        generate(url, max_retries=2)


@pytest.mark.parametrize("body", ["<html>gateway</html>" + "x" * 500, {"choices": []}, {"text": "hi"},
                                  {"choices": [{"text": 3}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}])
def test_an_answer_that_is_not_a_completion_fails_with_its_first_characters(stub: CompletionsStub, body: Any):
    stub.script = [(200, body)]
    with pytest.raises(ServerRequestError, match="not a completions response") as info:
        generate(stub.url)
    shown = str(info.value).split("not a completions response: ", 1)[1]
    assert len(shown) <= 200 + 2  # the first 200 characters, quoted
    assert len(stub.requests) == 1


def test_the_request_carries_token_ids_seed_and_the_constraint_as_vllm_takes_them(stub: CompletionsStub):
    generate(stub.url, regex="(yes|no)", seed=42)
    body = stub.requests[0]
    assert body["prompt"] == [1, 2, 3] and body["model"] == "m" and body["seed"] == 42
    assert body["structured_outputs"] == {"regex": "(yes|no)"}
    assert body["temperature"] == 0.7 and body["max_tokens"] == 8 and body["stream"] is False


def test_no_seed_and_no_constraint_send_neither(stub: CompletionsStub):
    generate(stub.url)
    assert "seed" not in stub.requests[0] and "structured_outputs" not in stub.requests[0]


def test_a_server_without_cached_token_details_counts_none_cached(stub: CompletionsStub):
    stub.script = [(200, completion("x", cached=None))]
    assert generate(stub.url).num_cached_tokens == 0


def test_backoff_doubles_with_jitter_and_is_capped():
    policy = RetryPolicy(max_retries=10, backoff_s=1.0, rng=random.Random(1))
    for attempt in range(4):
        waits = [policy.delay(attempt) for _ in range(200)]
        assert 0.5 * 2 ** attempt <= min(waits) and max(waits) < 1.5 * 2 ** attempt
        assert len(set(waits)) > 100  # jittered: conversations failed together do not retry together
    assert policy.delay(20) == MAX_BACKOFF_S
    assert policy.delay(0, retry_after="7") == 7.0  # the server's Retry-After, when longer
    assert policy.delay(0, retry_after="soon") < 1.5


def test_retry_after_is_waited_for(stub: CompletionsStub):
    stub.script = [(429, {"error": "slow down"}, {"Retry-After": "1"}), (200, completion())]
    started = time.monotonic()
    generate(stub.url)
    assert time.monotonic() - started >= 1.0


@pytest.mark.parametrize("max_connections", [2, 8])
def test_requests_in_flight_are_sent_at_once_up_to_the_connection_limit(stub: CompletionsStub,
                                                                        max_connections: int):
    stub.delay_s = 1.5  # long enough for all eight to arrive while the first is answered, on a busy machine

    async def go() -> None:
        s = settings(stub.url, timeout_s=60.0)
        async with http_client(s, max_connections=max_connections) as http:
            client = ServerRoleClient("user", http, s, WordTokenizer(), {"max_tokens": 8}, max_model_len=2048,
                                      kv_cache_tokens=None)
            await asyncio.gather(*(client.generate(f"c{i}@0", [1], None) for i in range(8)))

    asyncio.run(go())
    assert len(stub.requests) == 8 and stub.max_active == max_connections


def test_statuses_are_classified():
    from interplay.generator.runtime.server import is_retryable_status

    assert [s for s in (200, 400, 401, 404, 408, 422, 429, 500, 502, 503) if is_retryable_status(s)] == [
        408, 429, 500, 502, 503]


def test_the_server_client_needs_no_vllm(tmp_path: Path):
    """The server's side imports vLLM; ours does not: the client, its checks and a run's modules load with vLLM
    unimportable."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "vllm.py").write_text("raise ImportError('vllm is not installed here')\n")
    code = ("import interplay.generator.runtime.server, interplay.generator.runtime.server_checks, "
            "interplay.generator.runtime.run, interplay.generate; print('ok')")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{root}"})
    assert proc.stdout.strip() == "ok", proc.stderr

