"""The simulated GPU engine (benchmarks/gpu_model.py) keeps vLLM's batching rules and its documented step cost, on
a virtual clock; the simulated comparison (benchmarks/gpu_sim.py) runs end to end on a tiny corpus."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not part of the installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.gpu_model import BLOCK, GpuModel, SimEngine  # noqa: E402
from benchmarks.gpu_sim import SimClient, reply_lengths, simulated_gpu  # noqa: E402
from benchmarks.scale import summary  # noqa: E402

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


def test_a_prefix_that_running_requests_share_is_held_once() -> None:
    # 80-token prompts sharing their first 64 tokens, 10 output tokens: 6 blocks each, 4 of them shared. Two
    # copies (12 blocks) would not fit 8 blocks; as vLLM shares them (8 blocks) both run at once, and the second
    # finds the first's blocks, hashed as they are computed.
    roomy = GpuModel(**{**GPU.describe(), "max_num_batched_tokens": 512, "kv_cache_tokens": 8 * BLOCK})
    shared = list(range(64))
    engine, results = run(roomy, [(shared + [100] * 16, 10), (shared + [200] * 16, 10)])
    assert results == [(80, 0), (80, 64)]
    assert engine.stats.num_steps == 10  # together: one step of prefill and the first token, nine of decode


def test_a_finished_prompt_is_evicted_tail_first() -> None:
    # As vLLM frees a request's blocks (tail first), the head of a cached prompt outlives its tail, so what is
    # left of it is still a prefix that the next turn finds.
    small = GpuModel(**{**GPU.describe(), "kv_cache_tokens": 6 * BLOCK})
    history = list(range(64))  # 4 full blocks, cached once its request is done
    other = list(range(1000, 1040))  # needs 3 blocks: one of the history's 4 cached blocks is evicted
    engine, results = run(small, [(history, 1), (other, 1), (history + [7] * 10, 1)], sequential=True)
    assert results[2] == (74, 3 * BLOCK)  # the first three blocks; evicted head first, it would be none


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


def test_no_two_conversations_open_alike_so_no_turn_is_shared_across_them() -> None:
    # Canned replies repeat; sampled ones do not. Two conversations opening with the same canned line would give
    # the recommender the same first prompt, which a cache never evicting finds: a hit no real run gets.
    async def main() -> list[str]:
        engine = SimEngine(GPU)
        stepper = asyncio.create_task(engine.run())
        client = SimClient("user", None, [("Hi.", 2), ("Yes, [ACCEPT]", 4)], [2, 4], engine,
                           max_model_len=512, max_tokens=8)
        ids = ("a@0", "b@0", "a@1", "b@1", "a@10")
        texts = [(await client.generate(i, [1, 2, 3], seed=0)).text for i in ids]
        stepper.cancel()
        return texts

    a0, b0, a1, b1, a10 = asyncio.run(main())
    assert a0 != b0 and a0.endswith("Hi.") and b0.endswith("Hi.")
    assert a1 == b1 == a10 == "Hi."  # later turns follow a numbered opening: unique already


def test_simulated_gpu_compares_the_three_variants_and_d_bounds_both(tmp_path: Path, make_config) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(make_config().model_dump(mode="json")))
    # A KV cache of 3,000 tokens holds the histories of fewer than 16 of these conversations: waves evict them,
    # and (a) runs under its admission cap. (d) replays (a)'s requests on a cache that never evicts.
    tight = GpuModel(kv_cache_tokens=3_000)
    out = simulated_gpu([4, 16], 32, spreads=(0.0, 0.5), config_path=str(config_file), tokenizer="simple", gpu=tight)
    assert "SIMULATION" in out["simulation"]
    assert {m: set(by_spread) for m, by_spread in out["by_max_in_flight"].items()} == {"4": {"0.0", "0.5"},
                                                                                        "16": {"0.0", "0.5"}}
    for r in out["runs"]:
        a, b, d = (r["variants"][k] for k in ("a_interleaved", "b_waves", "d_replay"))
        assert a["num_requests"] == d["num_requests"] and a["output_tokens"] == d["output_tokens"]  # (d) replays (a)
        assert a["output_tokens"] == b["output_tokens"]  # the same conversations
        assert r["a_over_d"] == round(a["output_tok_per_s"] / d["output_tok_per_s"], 3)
        assert r["d_over_b"] >= 1.0 and r["a_over_d"] <= 1.0  # a bound on both
        assert d["evicted_blocks"] == 0
        for v in (a, b, d):  # each variant's own hits, the replay's too: its mean over the roles lies between them
            by_role = v["cached_prompt_share_by_role"].values()
            assert min(by_role) - 1e-4 <= v["cached_prompt_share"] <= max(by_role) + 1e-4 <= 1
        assert d["cached_prompt_share"] > a["cached_prompt_share"]  # a cache that never evicts finds more
        assert a["in_flight_cap"] <= r["max_in_flight"]
        assert out["by_max_in_flight"][str(r["max_in_flight"])][str(r["spread"])]["a_over_b"] == r["a_over_b"]
    at_16 = [r for r in out["runs"] if r["max_in_flight"] == 16]
    assert all(r["variants"]["b_waves"]["evicted_blocks"] > 0 for r in at_16)  # where the bound is tested
    assert all(a["in_flight_cap"] < 16 for a in (r["variants"]["a_interleaved"] for r in at_16))
    assert all(isinstance(t["met"], bool) for t in out["targets"].values())
    # `make bench-scale`'s result line carries the whole table.
    run = {"max_loop_stall_ms": 1.0, "peak_rss_mb": {"1": 1.0}, "turns_per_s": 1.0, "wall_s": 1.0}
    figures = {"runs": {"1000": run, "50": {"killed_run": run, "rerun": run}}, "resume_first_turn_s": 1.0,
               "status_s": 1.0, "manifest_bytes": 1, "shard_log_bytes": 1}
    line = json.loads(json.dumps(summary(1, figures, out)))["simulated_gpu"]
    assert line["by_max_in_flight"] == out["by_max_in_flight"] and "SIMULATION" in line["simulation"]
    assert set(line["targets_met"]) == set(out["targets"])
