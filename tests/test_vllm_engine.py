"""The real vLLM CPU engine with SmolLM2 on a small run: schema, manifest, grounding, resume after SIGKILL.

Needs the embedded model (`interplay prepare`, which `make test` runs first). Two engine start-ups in all.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from interplay.common.titles import normalize
from interplay.generator.inputs.catalog import Catalog
from interplay.generator.inputs.movielens import build_movielens
from interplay.generator.output.records import SCHEMA
from interplay.prepare import default_model_dir, default_movielens_dir

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NUM = 8
ARGS = ["--config", str(ROOT / "configs" / "embedded.yaml"), "--num-dialogues", str(NUM),
        "--set", "conversation.max_turns=4", "--set", "user.sampling.max_tokens=32",
        "--set", "recommender.sampling.max_tokens=48", "--set", "dialogues_per_shard=2",
        "--set", "max_in_flight=4"]


def _generate(out: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "interplay", "generate", "--output", str(out), *ARGS],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A run killed with SIGKILL after its first shard, then rerun to completion with the same command."""
    if not (default_model_dir() / "config.json").is_file():
        pytest.fail("the embedded model is not prepared: run `interplay prepare` (make test does)")
    out = tmp_path_factory.mktemp("vllm") / "corpus"
    first = _generate(out, start_new_session=True)  # own process group: the engine core dies with it
    deadline = time.time() + 300
    while not list(out.glob("shard-*.parquet")):
        if first.poll() is not None or time.time() > deadline:
            pytest.fail(f"first run ended or stalled before its first shard:\n{first.stdout.read()}")
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    shards_after_kill = len(list(out.glob("shard-*.parquet")))
    assert 1 <= shards_after_kill < NUM // 2, "the kill must land mid-run for the resume to be tested"
    second = _generate(out)
    log, _ = second.communicate(timeout=600)
    assert second.returncode == 0, log
    assert f"{shards_after_kill * 2} of {NUM} dialogues already in" in log
    return out


def test_every_conversation_exactly_once_and_readable(corpus: Path):
    assert not [p for p in corpus.iterdir() if p.name.endswith(".tmp")]
    rows = []
    for shard in sorted(corpus.glob("*.parquet")):
        table = pq.read_table(shard)
        assert table.schema.equals(SCHEMA, check_metadata=False)
        rows += table.to_pylist()
    assert sorted(r["conversation_index"] for r in rows) == list(range(NUM))
    assert len({r["conversation_id"] for r in rows}) == NUM


def test_manifest_totals_match_the_shards(corpus: Path):
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert len(manifest["runs"]) == 1  # a run is recorded when it ends; the killed one left only its shards
    rows = [r for s in sorted(corpus.glob("*.parquet")) for r in pq.read_table(s).to_pylist()]
    assert manifest["totals"]["num_dialogues"] == NUM
    outputs = sum(t["num_output_tokens"] for r in rows for t in r["turns"])
    assert outputs == sum(manifest["totals"]["tokens"][role]["output"] for role in ("user", "recommender")) > 0
    # Later turns re-send the earlier history: the prefix cache must serve part of it.
    assert manifest["totals"]["cached_prompt_share"]["user"] > 0.2


def test_turns_alternate_and_respect_limits(corpus: Path):
    for shard in corpus.glob("*.parquet"):
        for row in pq.read_table(shard).to_pylist():
            roles = [t["role"] for t in row["turns"]]
            assert roles == ["user", "recommender"] * (len(roles) // 2) + ["user"] * (len(roles) % 2)
            assert row["num_turns"] == len(roles) <= 4
            assert [m["role"] for m in row["messages"]] == [
                "user" if r == "user" else "assistant" for r in roles]
            assert all(t["num_output_tokens"] <= (32 if t["role"] == "user" else 48) for t in row["turns"])
            assert row["user_model"] == str(default_model_dir())


def test_grounded_items_are_named_in_their_turn(corpus: Path):
    catalog = Catalog.load(build_movielens(default_movielens_dir())[1])  # cached: the movies of every build
    for shard in corpus.glob("*.parquet"):
        for row in pq.read_table(shard).to_pylist():
            for turn in row["turns"]:
                text = normalize(turn["text"])
                for item_id in turn["item_ids"]:
                    item = catalog.get(item_id)
                    assert item is not None
                    # The title, or one of the alternative names MovieLens gives in parentheses.
                    names = [re.sub(r"\s*\(.*\)$", "", item.title), *re.findall(r"\(([^()]*)\)", item.title)]
                    assert any(normalize(n) in text for n in names if normalize(n)), (item.title, turn["text"])
            recommended = [i for t in row["turns"] if t["role"] == "recommender" for i in t["item_ids"]]
            assert row["recommended_item_ids"] == list(dict.fromkeys(recommended))
