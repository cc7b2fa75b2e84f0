"""topology: server in the config, and the checks before a run (generator/runtime/server_checks.py) against a
small real HTTP server (completions_stub.py) with the tiny test tokenizer: each problem one message naming the
setting, before the output is opened. Fast: no model, no vLLM. The real server: tests/test_server_engine.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from completions_stub import CompletionsStub
from interplay.generator.config import ConfigError, GenerateConfig, load_config
from interplay.generator.runtime.identity import corpus_identity
from interplay.generator.runtime.server_checks import ServerError, check_servers

METRICS = ('# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n'
           'vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",num_gpu_blocks="724",'
           'prefix_caching_hash_algo="sha256"} 1.0\n')


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> tuple[Any, Path]:
    from fixtures.training.tiny import build_tokenizer

    path = tmp_path_factory.mktemp("tok")
    return build_tokenizer(path), path


@pytest.fixture
def stub(tiny_tokenizer):
    server = CompletionsStub(models={"m": 512, "other": 512}, tokenizer=tiny_tokenizer[0], metrics=METRICS)
    yield server
    server.stop()


def server_config(url: str, tokenizer: Path, seeds_file: Path, catalog_file: Path, **over: Any) -> GenerateConfig:
    data: dict[str, Any] = {
        "topology": "server", "server": {"base_url": url, "model": "m", "tokenizer": str(tokenizer)},
        "user": {"sampling": {"max_tokens": 32}}, "recommender": {"sampling": {"max_tokens": 32}},
        "seeds": {"source": "file", "path": str(seeds_file), "catalog": str(catalog_file)}}
    for key, value in over.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return GenerateConfig.model_validate(data)


@pytest.fixture
def config(stub, tiny_tokenizer, seeds_file, catalog_file):
    def make(**over: Any) -> GenerateConfig:
        return server_config(stub.url, tiny_tokenizer[1], seeds_file, catalog_file, **over)

    return make


def test_a_server_that_serves_the_model_passes_and_says_what_it_serves(stub, config):
    served = check_servers(config())
    assert set(served) == {"user", "recommender"}
    user = served["user"]
    assert (user.model, user.root, user.max_model_len) == ("m", "/srv/m", 512)
    assert user.kv_cache_tokens == 724 * 16  # from vllm:cache_config_info
    assert len(stub.requests) == 2  # one probe completion per role
    assert all(r["max_tokens"] == 1 and "structured_outputs" not in r for r in stub.requests)


def test_without_metrics_the_kv_cache_size_is_unknown(stub, config):
    stub.metrics = ""
    assert check_servers(config())["user"].kv_cache_tokens is None


def test_a_model_the_server_does_not_serve_is_one_message(config):
    with pytest.raises(ServerError, match=r"^user.server.model: 'nope' is not served at http://127.0.0.1:\d+ "
                                          r"\(it serves: m, other\)$"):
        check_servers(config(**{"user.server": {"model": "nope"}}))


def test_an_unreachable_server_is_one_message(tiny_tokenizer, seeds_file, catalog_file):
    gone = CompletionsStub()
    gone.stop()
    cfg = server_config(gone.url, tiny_tokenizer[1], seeds_file, catalog_file)
    with pytest.raises(ServerError, match=rf"^server.base_url: cannot reach the server at {gone.url} "
                                          r"\(ConnectError: .*\); start it \(make serve\) or fix the address$"):
        check_servers(cfg)


def test_a_tokenizer_that_disagrees_with_the_server_is_refused(stub, config):
    stub.tokenize_offset = 1
    with pytest.raises(ServerError, match=r"^server.tokenizer: '.*' does not tokenize a probe prompt as the "
                                          r"server at .* does"):
        check_servers(config())


def test_a_probe_request_the_server_refuses_is_refused_before_the_run(stub, config):
    stub.script = [(400, {"error": {"message": "top_k must be -1 or at least 1, got -5"}})]
    with pytest.raises(ServerError, match=r"^user.sampling: the server at .* answered status 400: .*top_k must be"):
        check_servers(config(**{"user.sampling": {"max_tokens": 32, "top_k": -5}}))


def test_the_teacher_probes_the_constrained_replies(stub, config):
    check_servers(config(protocol="reference"))
    constrained = [r for r in stub.requests if "structured_outputs" in r]
    assert len(constrained) == 2 and all("regex" in r["structured_outputs"] for r in constrained)


def test_max_tokens_that_leave_no_room_for_a_prompt(config):
    with pytest.raises(ServerError, match=r"^recommender.sampling.max_tokens: 600 leaves no room for a prompt in "
                                          r"the server's max_model_len 512$"):
        check_servers(config(**{"recommender.sampling": {"max_tokens": 600}}))


def test_a_server_that_is_not_openai_compatible(stub, config):
    stub.models_text = "<html><body>Welcome to nginx!</body></html>"
    with pytest.raises(ServerError, match=r"^server.base_url: the server at .* is not an OpenAI-compatible server "
                                          r"\(its answer: '<html><body>Welcome to nginx!</body></html>'\)$"):
        check_servers(config())


def test_the_api_key_comes_from_the_named_variable(stub, config, monkeypatch):
    stub.api_key = "sekrit"
    monkeypatch.delenv("INTERPLAY_TEST_KEY", raising=False)
    cfg = config(**{"server.api_key_env": "INTERPLAY_TEST_KEY"})
    with pytest.raises(ServerError, match=r"^server.api_key_env: the environment variable INTERPLAY_TEST_KEY is "
                                          r"not set"):
        check_servers(cfg)
    monkeypatch.setenv("INTERPLAY_TEST_KEY", "wrong")
    with pytest.raises(ServerError, match=r"refuses the API key \(from \$INTERPLAY_TEST_KEY\): status 401"):
        check_servers(cfg)
    monkeypatch.setenv("INTERPLAY_TEST_KEY", "sekrit")
    assert check_servers(cfg)["user"].model == "m"
    assert "sekrit" not in repr(cfg.model_dump())  # the config holds the variable's name, never the key


def test_a_sampling_key_the_completions_api_does_not_take(config):
    with pytest.raises(ServerError, match=r"^user.sampling.guided_decoding: not a sampling parameter of "
                                          r"/v1/completions"):
        check_servers(config(**{"user.sampling": {"max_tokens": 32, "guided_decoding": {}}}))


def test_a_run_through_the_server_client_writes_the_corpus(stub, config, tiny_tokenizer, tmp_path):
    """The scheduler drives the server client as it drives the in-process engine: prompts go as our token ids,
    the counts come from the server's usage."""
    from interplay.generator.runtime.run import Generation
    from interplay.generator.runtime.server import open_servers

    stub.models = {"m": 4096}
    cfg = config(num_dialogues=4, max_in_flight=2, dialogues_per_shard=2, **{"conversation.max_turns": 4})
    generation = Generation(cfg, tmp_path / "out")
    manifest = asyncio.run(generation.run(open_servers))
    assert manifest["status"] == "complete" and manifest["totals"]["num_dialogues"] == 4
    turns = [r for r in stub.requests if r["max_tokens"] == 32]  # not the probes'
    assert len(turns) == 4 * 4  # every turn of every conversation, none twice
    tokenizer = tiny_tokenizer[0]
    assert all(isinstance(r["prompt"], list) and r["prompt"][-3:] == tokenizer.encode(
        "<|im_start|>assistant\n") for r in turns)
    assert manifest["totals"]["tokens"]["user"]["output"] == 2 * 4  # the stub's usage: one token a turn


def test_identity_names_the_served_model(stub, config, seeds_file, catalog_file):
    cfg = config()
    identity = corpus_identity(cfg, seeds_file, catalog_file, served=check_servers(cfg))
    assert identity["served.user"] == "m" and identity["model.user"] == "/srv/m@server"  # not on this machine
    assert identity["adapter.user"] is None


# ---------------------------------------------------------------------------------------------- the config


def test_topology_server_needs_an_address_and_a_model(tiny_tokenizer, seeds_file, catalog_file):
    with pytest.raises(ConfigError, match=r"server.base_url: required with topology: server"):
        load_config(None, {"topology": "server", "server.model": "m"})
    with pytest.raises(ConfigError, match=r"server.model: required with topology: server"):
        load_config(None, {"topology": "server", "server.base_url": "http://h:1"})
    with pytest.raises(ConfigError, match=r"server.base_url: must start with http:// or https://"):
        load_config(None, {"topology": "server", "server.base_url": "h:1", "server.model": "m"})


@pytest.mark.parametrize("key,value,message", [
    ("engine.model", "x", "engine: set, but topology is server"),
    ("user.adapter", None, "user.adapter: set, but topology is server"),
])
def test_topology_server_refuses_what_would_start_an_engine(key, value, message, tmp_path):
    if key == "user.adapter":
        (tmp_path / "adapter_config.json").write_text("{}")
        value = str(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"topology": "server", "server.base_url": "http://h:1", "server.model": "m", key: value})


def test_a_server_section_needs_topology_server():
    with pytest.raises(ConfigError, match="server: set, but topology is shared"):
        load_config(None, {"engine.model": "org/model", "server.base_url": "http://h:1"})


def test_a_role_overrides_the_shared_server_fields():
    cfg = load_config(None, {"topology": "server", "server.base_url": "http://h:1/v1", "server.model": "base",
                             "server.tokenizer": "org/tok", "recommender.server.model": "rec-lora",
                             "user.server.max_retries": 0})
    assert cfg.server_settings("recommender")["model"] == "rec-lora"
    assert cfg.server_settings("user")["model"] == "base" and cfg.server_settings("user")["max_retries"] == 0
    assert cfg.server_settings("recommender")["max_retries"] == 5  # the default
    assert cfg.server_settings("user")["tokenizer"] == "org/tok"


def test_where_the_server_is_leaves_the_hash_alone_and_what_it_serves_does_not():
    base = {"topology": "server", "server.base_url": "http://h:1", "server.model": "m"}
    cfg = load_config(None, base)
    for key, value in (("server.base_url", "http://other:2"), ("server.timeout_s", 5), ("server.max_retries", 0),
                       ("server.backoff_s", 3), ("server.api_key_env", "KEY")):
        moved = load_config(None, {**base, key: value})
        assert moved.hash() == cfg.hash()
        assert moved.runtime_settings()[key] == value
    for key, value in (("server.model", "n"), ("server.tokenizer", "org/tok"), ("user.server.model", "u")):
        assert load_config(None, {**base, key: value}).hash() != cfg.hash()


def test_a_server_gone_mid_run_stops_the_command_naming_it(stub, tiny_tokenizer, seeds_file, catalog_file,
                                                           tmp_path):
    """The real command line against the small server, taken down once the first shard is written: exit 1 and one
    line naming the server; what finished is on disk, and the conversations in flight used no attempt."""
    import json
    import subprocess
    import sys
    import time

    import yaml

    stub.models, stub.delay_s = {"m": 4096}, 0.05
    cfg = server_config(stub.url, tiny_tokenizer[1], seeds_file, catalog_file, num_dialogues=20, max_in_flight=2,
                        dialogues_per_shard=2, **{"conversation.max_turns": 4, "server.max_retries": 1,
                                                  "server.backoff_s": 0.1})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "interplay", "generate", "--config", str(path), "--output",
                             str(out)], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    url = stub.url
    stub.stop()  # connections refused from now on, as a killed server's
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-3000:]
    stopped = [line for line in stderr.splitlines() if line.startswith("interplay: stopped:")]
    assert len(stopped) == 1 and f"the server at {url} cannot be reached any more" in stopped[0], stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert 2 <= manifest["totals"]["num_dialogues"] < 20 and manifest["status"] != "complete"
    assert not (out / "failures.jsonl").exists() or not (out / "failures.jsonl").read_text().strip()
