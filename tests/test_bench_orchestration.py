"""The orchestration benchmark runs end to end on a tiny corpus and returns sane figures (no timing assertions)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not part of the installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import orchestration  # noqa: E402
from benchmarks.zero_latency import SimpleTokenizer, ZeroLatencyClient, canned_replies  # noqa: E402


def test_canned_replies_name_catalog_titles_and_carry_markers() -> None:
    replies = canned_replies(["Heat (1995)", "Fargo (1996)"], SimpleTokenizer(), accept="[OK]", quit="[BYE]")
    user, rec = [t for t, _ in replies["user"]], [t for t, _ in replies["recommender"]]
    assert any(t.endswith("[OK]") for t in user) and any("[BYE]" in t for t in user)
    assert all("{" not in t for t in user + rec)
    assert sum(("Heat (1995)" in t) or ("Fargo (1996)" in t) for t in rec) > len(rec) // 2
    counts = [n for _, n in replies["user"] + replies["recommender"]]
    assert min(counts) >= 2 and max(counts) > 20  # lengths vary, as real replies do


def test_zero_latency_client_answers_from_the_seed() -> None:
    import asyncio

    client = ZeroLatencyClient("user", SimpleTokenizer(), [("a b", 3), ("c d e", 4)], max_model_len=100,
                               max_tokens=64)
    first = asyncio.run(client.generate("c@0", [1, 2, 3], 7))
    assert (first.text, first.num_prompt_tokens, first.num_output_tokens) == ("c d e", 3, 4)
    assert asyncio.run(client.generate("c@0", [1, 2, 3], 7)) == first and client.num_calls == 2


def test_run_orchestration_writes_the_corpus_and_reports_figures(tmp_path: Path, make_config) -> None:
    config = make_config(num_dialogues=40, max_in_flight=8, dialogues_per_shard=16)
    out = tmp_path / "out"
    figures = orchestration.run_orchestration(config, out, tokenizer="simple")
    assert figures["num_dialogues"] == 40
    assert sum(figures["outcomes"].values()) == 40
    assert 40 <= figures["num_turns"] <= 40 * config.conversation.max_turns
    assert figures["turns_per_s"] > 0 and figures["dialogues_per_s"] > 0 and figures["peak_rss_mb"] > 10
    assert figures["cpu_s"] > 0 and figures["turns_per_cpu_s"] > 0
    assert figures["num_shards"] == 3
    rows = [r for p in sorted(out.glob("shard-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert sorted(r["conversation_index"] for r in rows) == list(range(40))
    assert sum(len(r["turns"]) for r in rows) == figures["num_turns"]
    assert any(r["recommended_item_ids"] for r in rows)  # canned titles were grounded in the catalog
    assert {r["user_model"] for r in rows} == {"zero-latency-fake"}


def test_measure_runs_each_size_in_its_own_process(tmp_path: Path, make_config, capsys) -> None:
    config = make_config()
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert orchestration.main(["--sizes", "12,30", "--config", str(config_file), "--tokenizer", "simple",
                               "--set", "max_in_flight=4", "--set", "dialogues_per_shard=10"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["runs"]) == {"12", "30"}
    assert [result["runs"][n]["num_dialogues"] for n in ("12", "30")] == [12, 30]
    assert result["runs"]["30"]["num_shards"] == 3
    assert result["turns_per_s"] == min(r["turns_per_s"] for r in result["runs"].values())
    assert result["turns_per_cpu_s"] == min(r["turns_per_cpu_s"] for r in result["runs"].values())
    ratio = result["runs"]["30"]["peak_rss_mb"] / result["runs"]["12"]["peak_rss_mb"]
    assert result["peak_rss_ratio_largest_to_smallest"] == round(ratio, 3)
