"""The simulated GPU engine (benchmarks/gpu_model.py) keeps vLLM's batching rules and its documented step cost, on
a virtual clock; the simulated comparison (benchmarks/gpu_sim.py) runs end to end on a tiny corpus."""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not part of the installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.gpu_model import BLOCK, GpuModel, SimEngine  # noqa: E402
from benchmarks.gpu_sim import reply_lengths, simulated_gpu  # noqa: E402

GPU = GpuModel(decode_floor_s=0.01, knee_seqs=4, decode_s_per_seq=0.001, prefill_s_per_token=0.0001,
               max_num_seqs=8, max_num_batched_tokens=64, kv_cache_tokens=4096)


def run(gpu: GpuModel, jobs: list[tuple[list[int], int]], *, sequential: bool = False) -> tuple[SimEngine, list]:
    async def main() -> tuple[SimEngine, list]:
        engine = SimEngine(gpu)
        stepper = asyncio.create_task(engine.run())
        if sequential:
            results = [await engine.generate(p, n) for p, n in jobs]
        else:
            results = await asyncio.gather(*(engine.generate(p, n) for p, n in jobs))
        stepper.cancel()
        return engine, list(results)

    return asyncio.run(main())


def test_step_cost_is_flat_to_the_knee_then_grows_and_prefill_adds_per_token() -> None:
    assert GPU.step_seconds(1, 0) == GPU.step_seconds(4, 0) == pytest.approx(0.01)
    assert GPU.step_seconds(6, 0) == pytest.approx(0.012)
    assert GPU.step_seconds(6, 100) == pytest.approx(0.022)


def test_one_request_prefills_in_chunks_then_decodes_one_token_a_step() -> None:
    engine, [(num_prompt, num_cached)] = run(GPU, [(list(range(150)), 5)])
    # 150 prompt tokens at 64 a step: chunks of 64, 64, 22; the last chunk's step samples token 1, then 4 more.
    assert (num_prompt, num_cached) == (150, 0)
    assert engine.stats.num_steps == 3 + 4
    assert engine.now == pytest.approx(7 * 0.01 + 150 * 0.0001)
    assert engine.stats.output_tokens == 5


def test_a_repeated_prefix_is_cached_and_costs_nothing() -> None:
    prompt = list(range(100))
    engine, results = run(GPU, [(prompt, 1), (prompt + [7, 8, 9], 1)], sequential=True)
    assert results[0] == (100, 0)
    assert results[1] == (103, (100 // BLOCK) * BLOCK)  # the full blocks of the first prompt
    assert engine.now == pytest.approx(3 * 0.01 + (100 + 103 - 96) * 0.0001)  # 64 + 36 tokens, then 7


def test_batches_respect_max_num_seqs_and_the_kv_cache() -> None:
    engine, _ = run(GPU, [([k] * 20, 10) for k in range(20)])
    assert engine.stats.num_requests == 20
    assert engine.stats.seq_steps / engine.stats.num_steps <= GPU.max_num_seqs
    small_kv = GpuModel(**{**GPU.describe(), "kv_cache_tokens": 64})  # room for two requests of 30 tokens
    engine, _ = run(small_kv, [([k] * 20, 10) for k in range(4)])
    assert engine.stats.num_steps == 2 * 10  # two at a time, ten steps each


def test_the_clock_does_not_move_while_idle() -> None:
    engine, _ = run(GPU, [])
    assert engine.now == 0.0 and engine.stats.num_steps == 0


def test_reply_lengths_have_the_wanted_mean_and_spread_after_the_clip() -> None:
    counts = [3, 5, 8, 13, 21, 34, 40, 44]
    for spread in (0.0, 0.2, 0.35):
        lengths = reply_lengths(counts, 54, spread, 64)
        assert max(lengths) <= 64 and min(lengths) >= 1
        assert statistics.fmean(lengths) == pytest.approx(54, abs=1)
        assert statistics.pstdev(lengths) / statistics.fmean(lengths) == pytest.approx(spread, abs=0.02)
    assert sorted(reply_lengths(counts, 54, 0.35, 64)) == reply_lengths(counts, 54, 0.35, 64)  # order kept


def test_simulated_gpu_compares_the_three_variants(tmp_path: Path, make_config) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(make_config().model_dump(mode="json")))
    out = simulated_gpu([4, 8], 16, spreads=(0.0,), config_path=str(config_file), tokenizer="simple")
    assert "SIMULATION" in out["simulation"]
    assert set(out["by_max_in_flight"]) == {"4", "8"}
    assert [p["spread"] for p in out["by_spread"]] == [0.0, out["spread"]]
    for r in out["runs"]:
        a, b, d = (r["variants"][k] for k in ("a_interleaved", "b_waves", "d_replay"))
        assert a["num_requests"] == d["num_requests"] and a["output_tokens"] == d["output_tokens"]  # (d) replays (a)
        assert a["output_tok_per_s"] > 0 and b["output_tok_per_s"] > 0
        assert r["a_over_d"] == round(a["output_tok_per_s"] / d["output_tok_per_s"], 3)
    assert out["a_over_b"] == out["by_max_in_flight"]["8"]["a_over_b"]
    assert all(isinstance(t["met"], bool) for t in out["targets"].values())
