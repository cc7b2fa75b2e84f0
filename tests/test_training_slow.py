"""Training closed on the real stack, small: `interplay train` fine-tunes SmolLM2's user simulator on the fixture
dialogues, the vLLM CPU engine serves the adapter through `interplay generate`, and what it says differs from the
base model's turns for the same conversations and sampling seeds. And `interplay summarize` on the real engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import require_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "training"
EMBEDDED = ROOT / "configs" / "embedded.yaml"
# Per-turn seeds: the tuned and the base run sample with the same seeds, so only the adapter makes them differ.
SMALL = ["--num-dialogues", "4", "--set", "conversation.max_turns=2", "--set", "user.sampling.max_tokens=24",
         "--set", "recommender.sampling.max_tokens=24", "--set", "max_in_flight=4", "--set", "sampling_seeds=per_turn"]


def interplay(*args: str, log: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "interplay", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    tail = log.read_text()[-3000:] if log is not None and log.is_file() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + tail
    return proc


def generate(out: Path, *extra: str) -> dict[str, str]:
    interplay("generate", "--config", str(EMBEDDED), "--output", str(out), *SMALL, *extra,
              log=out / "logs" / "engine.log")
    rows = [r for s in sorted(out.glob("*.parquet")) for r in pq.read_table(s).to_pylist()]
    assert len(rows) == 4
    return {r["conversation_id"]: r for r in rows}


@pytest.fixture(scope="module")
def model() -> Path:
    return require_model()


def test_trained_user_adapter_is_served_by_vllm_and_changes_its_turns(model: Path, tmp_path: Path):
    adapter = tmp_path / "user-simulator"
    proc = interplay("train", "--role", "user", "--data", str(FIXTURES / "dialogues.jsonl"), "--output",
                     str(adapter), "--set", "train.max_steps=6", "--set", "train.batch_size=2",
                     "--set", "train.max_seq_len=384", "--set", "train.learning_rate=2e-3", "--set", "lora.r=8")
    assert f"user adapter: {adapter}" in proc.stdout
    summary = json.loads((adapter / "loss.json").read_text())
    assert summary["steps"] == 6 and summary["eval"]["loss_after"] < summary["eval"]["loss_before"]
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8

    tuned = generate(tmp_path / "tuned", "--set", f"user.adapter={adapter}")
    assert {r["user_adapter"] for r in tuned.values()} == {str(adapter)}
    assert all(r["turns"][0]["num_output_tokens"] > 0 for r in tuned.values())
    base = generate(tmp_path / "base")
    assert base.keys() == tuned.keys()
    # Same seeds, same conversations: only the adapter differs, so the user's turns change.
    changed = sum(base[c]["turns"][0]["raw_text"] != tuned[c]["turns"][0]["raw_text"] for c in base)
    assert changed >= 3, [(base[c]["turns"][0]["raw_text"], tuned[c]["turns"][0]["raw_text"]) for c in base]


def test_summarize_on_the_real_engine(model: Path, tmp_path: Path):
    out = tmp_path / "pearl.parquet"
    proc = interplay("summarize", "--data", str(FIXTURES / "pearl_train.json"), "--config", str(EMBEDDED),
                     "--output", str(out), "--set", "user.sampling.max_tokens=48", "--set", "max_in_flight=4",
                     "--set", "user.sampling.temperature=0",  # greedy: what the two rows say is not the sampler's luck
                     log=out.with_name(out.name + ".engine.log"))
    assert "2 dialogues" in proc.stdout
    rows = pq.read_table(out).to_pylist()
    assert [r["dialogue_id"] for r in rows] == ["0", "1"]
    assert rows[0]["summary_model"] == str(model)
    assert sum(bool(r["preference_summary"]) and bool(r["target_attributes"]) for r in rows) >= 1
    for row in rows:  # the target never reaches the user simulator's conditioning
        text = (str(row["preference_summary"]) + json.dumps(row["target_attributes"])).lower()
        assert row["target_item"].lower() not in text
