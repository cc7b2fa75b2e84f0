"""A LoRA adapter trained by `interplay train`, on the real vLLM CPU engine with SmolLM2.

- It loads and is served: the engine layer's adapter-fit check passes on the real engine, and the adapter's turns
  come back.
- It changes what the model says: the same user-simulator prompts, greedy (temperature 0), one at a time, served
  with the adapter and without it (the base model, on the same engine); the base is run twice, as a control, so
  the test fails if the adapter changes nothing and also if greedy output is not repeatable to begin with.
- An adapter whose fingerprint (interplay_base.json) names another base is refused before any turn, with the
  message naming what differs.

Engine start-ups: one for the first two (one asyncio session in a module fixture), one for the refusal, which
runs `interplay generate` itself: the point there is that a run stops before it serves a turn, not what a
function returns.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import make_catalog, make_seeds, require_model
from fixtures.training.tiny import build_tokenizer
from interplay.common.adapters import FINGERPRINT_FILE, fingerprint
from interplay.common.cpu import cpu_auto_dtype
from interplay.generator.config import load_config
from interplay.generator.dialogue.conversation import Conversation
from interplay.generator.runtime.run import prompt_messages

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "configs" / "embedded.yaml"
DIALOGUES = ROOT / "tests" / "fixtures" / "training" / "dialogues.jsonl"
NUM_PROMPTS = 4
# Two optimizer steps at a high learning rate: enough to move greedy output, seconds on the CPU.
TRAIN = ["--set", "train.max_steps=2", "--set", "train.batch_size=2", "--set", "train.max_seq_len=384",
         "--set", "train.learning_rate=5e-3", "--set", "lora.r=8"]
GREEDY = {"temperature": 0.0, "max_tokens": 32}


def interplay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "interplay", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    require_model()
    out = tmp_path_factory.mktemp("trained") / "user-simulator"
    proc = interplay("train", "--role", "user", "--data", str(DIALOGUES), "--output", str(out), *TRAIN)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / FINGERPRINT_FILE).is_file() and (out / "adapter_model.safetensors").is_file()
    return out


async def _serve(config: Any) -> dict[str, list[str]]:
    """Greedy texts of the same user-simulator prompts: with the adapter (the user client) and without it (the
    recommender client: same engine, same sampling, no adapter), the latter twice. One request at a time, so
    every request runs in a batch of one."""
    from interplay.generator.runtime.engine import open_engines

    messages = prompt_messages(config, make_catalog())
    convs = [Conversation(f"c{i}", i, seed) for i, seed in enumerate(make_seeds(NUM_PROMPTS))]
    texts: dict[str, list[Any]] = {"adapter": [], "base": [], "base_again": []}
    async with open_engines(config) as clients:  # the adapter-fit check runs in here, on the real engine
        texts["kv_cache_tokens"] = [clients[role].kv_cache_tokens for role in ("user", "recommender")]
        prompts = [clients["user"].render(messages(conv, "user")) for conv in convs]
        for name, role in (("adapter", "user"), ("base", "recommender"), ("base_again", "recommender")):
            for i, prompt in enumerate(prompts):
                completion = await clients[role].generate(f"{name}-{i}@0", prompt, None)
                texts[name].append(completion.text)
    return texts


@pytest.fixture(scope="module")
def served(adapter: Path) -> dict[str, list[str]]:
    config = load_config(EMBEDDED, {
        "user.adapter": str(adapter), "user.sampling": GREEDY, "recommender.sampling": GREEDY,
        # Every request computes its whole prompt: the control's second pass must not read the first's KV cache.
        "engine.enable_prefix_caching": False, "engine.kv_cache_memory_bytes": 1 << 30})
    return asyncio.run(_serve(config))


def test_trained_adapter_loads_and_is_served(served):
    assert len(served["adapter"]) == NUM_PROMPTS and all(t.strip() for t in served["adapter"])


def test_the_engine_reports_its_kv_cache_size_to_the_scheduler(served):
    """The admission cap (policy.KvAdmission) reads kv_cache_tokens: the 1 GiB of KV cache asked for, in tokens of
    SmolLM2 (K and V of 30 layers x 3 KV heads x 64 dims per token, in the number format `dtype: auto` resolves to on
    this CPU: bfloat16 with bf16 instructions, float32 without), whole blocks of it."""
    config = json.loads((require_model() / "config.json").read_text())
    element_bytes = 2 if cpu_auto_dtype() == "bfloat16" else 4
    bytes_per_token = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * config["head_dim"] * element_bytes
    user, recommender = served["kv_cache_tokens"]
    assert user == recommender  # one shared engine: both roles' histories share its cache
    assert 0.9 * (1 << 30) / bytes_per_token <= user <= (1 << 30) / bytes_per_token


def test_trained_adapter_changes_greedy_output(served):
    assert served["base"] == served["base_again"], "greedy base output must repeat, or the comparison means nothing"
    changed = [i for i in range(NUM_PROMPTS) if served["adapter"][i] != served["base"][i]]
    assert changed, list(zip(served["adapter"], served["base"]))


def test_adapter_of_another_base_is_refused_before_any_turn(adapter: Path, tmp_path: Path):
    """The trained weights, with the fingerprint of another base (a tiny model with its own vocabulary): vLLM
    would load them (their shapes fit SmolLM2), so only interplay's check can refuse."""
    foreign = shutil.copytree(adapter, tmp_path / "foreign")
    tiny = {"model_type": "llama", "vocab_size": 600, "hidden_size": 32, "num_hidden_layers": 2}
    (foreign / FINGERPRINT_FILE).write_text(json.dumps(
        {"base_model": "tiny-llama", **fingerprint(tiny, build_tokenizer(tmp_path / "tok"))}))
    out = tmp_path / "out"
    proc = interplay("generate", "--config", str(EMBEDDED), "--output", str(out), "--num-dialogues", "2",
                     "--set", f"user.adapter={foreign}", "--set", "user.sampling.max_tokens=16",
                     "--set", "recommender.sampling.max_tokens=16")
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"user.adapter: the adapter {str(foreign)!r} was trained on 'tiny-llama'" in proc.stderr
    assert "differs from the base model" in proc.stderr and "vocab_size 600 (adapter)" in proc.stderr
    assert not list(out.glob("shard-*.parquet"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] != "complete" and manifest["totals"]["num_dialogues"] == 0
