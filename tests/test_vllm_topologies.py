"""The two other topologies on the real vLLM CPU engine: one shared engine with a LoRA adapter per role, and two
separate engines. Small runs; the point is that each path starts, serves both roles and records what served them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from interplay.prepare import default_model_dir
from interplay.training import random_lora

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Per-turn seeds: a run with adapters and one without sample with the same seeds, so only the adapters differ.
SMALL = ["--num-dialogues", "4", "--set", "conversation.max_turns=2", "--set", "user.sampling.max_tokens=24",
         "--set", "recommender.sampling.max_tokens=24", "--set", "max_in_flight=4", "--set", "sampling_seeds=per_turn"]


def make_lora(path: Path, *, rank: int, seed: int) -> Path:
    return random_lora.make_lora(path, str(default_model_dir()), rank=rank, seed=seed, scale=0.05)


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
