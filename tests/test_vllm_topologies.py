"""The two other topologies on the real vLLM CPU engine: one shared engine with a LoRA adapter per role, and two
separate engines. Small runs; the point is that each path starts, serves both roles and records what served them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from interplay.prepare import default_model_dir

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--num-dialogues", "4", "--set", "conversation.max_turns=2", "--set", "user.sampling.max_tokens=24",
         "--set", "recommender.sampling.max_tokens=24", "--set", "max_in_flight=4"]


def make_lora(path: Path, *, rank: int, seed: int) -> Path:
    """A random (untrained) PEFT LoRA adapter for SmolLM2-135M's attention projections."""
    config = json.loads((default_model_dir() / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    kv = config["num_key_value_heads"] * config.get("head_dim", hidden // config["num_attention_heads"])
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(layers):
        for name, out in (("q_proj", hidden), ("v_proj", kv)):
            prefix = f"base_model.model.model.layers.{i}.self_attn.{name}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=gen) * 0.05
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out, rank, generator=gen) * 0.05
    path.mkdir(parents=True)
    save_file(tensors, path / "adapter_model.safetensors")
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"], "bias": "none", "fan_in_fan_out": False,
        "base_model_name_or_path": str(default_model_dir())}))
    return path


def _run(out: Path, *extra: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "interplay", "generate", "--config",
                           str(ROOT / "configs" / "embedded.yaml"), "--output", str(out), *SMALL, *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr + (out / "logs" / "engine.log").read_text()[-3000:]
    return [r for s in sorted(out.glob("*.parquet")) for r in pq.read_table(s).to_pylist()]


def test_shared_engine_with_one_lora_adapter_per_role(tmp_path: Path):
    user, rec = make_lora(tmp_path / "user", rank=8, seed=1), make_lora(tmp_path / "rec", rank=8, seed=2)
    rows = _run(tmp_path / "out", "--set", f"user.adapter={user}", "--set", f"recommender.adapter={rec}")
    assert len(rows) == 4
    assert {r["user_adapter"] for r in rows} == {str(user)}
    assert {r["recommender_adapter"] for r in rows} == {str(rec)}
    assert all(t["num_output_tokens"] > 0 for r in rows for t in r["turns"])
    # The adapters change what is generated: the same conversations without them differ.
    base = {r["conversation_id"]: r["turns"][0]["raw_text"] for r in _run(tmp_path / "base")}
    assert sum(base[r["conversation_id"]] != r["turns"][0]["raw_text"] for r in rows) >= 3


def test_separate_engines_one_per_role(tmp_path: Path):
    rows = _run(tmp_path / "out", "--set", "topology=separate",
                "--set", "user.engine={kv_cache_memory_bytes: 268435456}",
                "--set", "recommender.engine={kv_cache_memory_bytes: 268435456}")
    assert len(rows) == 4
    assert all([t["role"] for t in r["turns"]] == ["user", "recommender"] for r in rows
               if r["outcome"] == "max_turns")
    assert {r["user_model"] for r in rows} == {str(default_model_dir())}
