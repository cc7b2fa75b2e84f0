"""The throughput benchmark's rounds (benchmarks/rounds.py, benchmarks/throughput.py): alternating order, (d)
replaying the latest (a), ratios as median and spread, "no difference" when the spread contains 1.0; and memory
counted once per page (PSS) over the process tree. No engine is started."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not part of the installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import throughput  # noqa: E402
from benchmarks.common import MemorySampler, pss_bytes  # noqa: E402
from benchmarks.rounds import round_orders, round_ratios, spread, verdict  # noqa: E402

A, B, D = "a_interleaved", "b_waves", "d_replay"


def test_rounds_alternate_their_order() -> None:
    orders = round_orders([A, B, D], 3)
    assert orders == [[A, B, D], [D, B, A], [A, B, D]]
    assert sum(orders, []) == [A, B, D, D, B, A, A, B, D]


def test_median_spread_and_no_difference() -> None:
    s = spread([1.1, 0.95, 1.3])
    assert (s["median"], s["min"], s["max"]) == (1.1, 0.95, 1.3)
    assert verdict(s, 1.2) == "no difference"  # the rounds cannot tell the two variants apart
    assert verdict(spread([1.25, 1.3, 1.4]), 1.2) == "met"
    assert verdict(spread([1.05, 1.1, 1.15]), 1.2) == "not met"
    assert verdict(spread([0.8, 0.83, 0.9]), 0.85) == "not met"


def test_round_ratios_use_a_once_run_variant_in_every_round() -> None:
    rounds = [{A: {"x": 10.0}, B: {"x": 5.0}}, {A: {"x": 9.0}}, {A: {"x": 12.0}, B: {"x": 6.0}}]
    assert round_ratios(rounds, A, B, "x") == [2.0, 2.0]
    assert round_ratios(rounds, A, "c", "x", fallback={"c": {"x": 3.0}}) == [3.333, 3.0, 4.0]


def bench(num_rounds: int, skip: set[str] = frozenset()) -> throughput.Bench:
    b = object.__new__(throughput.Bench)  # no config, no engine: only the rounds' bookkeeping
    b.args = argparse.Namespace(rounds=num_rounds, skip=set(skip))
    b.out = {"variants": {}, "ratios": {}, "errors": {}}
    return b


def test_bench_runs_each_variant_in_every_round_and_replays_the_latest_a() -> None:
    b, calls = bench(3), []

    async def variant(name, clients, cfg, requests, tag):
        calls.append((name, requests))
        k = sum(1 for c, _ in calls if c == name)
        out = {"output_tok_per_s": {A: 100.0, B: 80.0, D: 101.0}[name] + k}
        return {**out, "_requests": f"a{k}"} if name == A else out

    b.variant = variant
    rounds = asyncio.run(b.rounds({}, None))
    assert [c for c, _ in calls] == [A, B, D, D, B, A, A, B, D]
    assert [r for c, r in calls if c == D] == ["a1", "a1", "a3"]  # round 2's (d) runs before its (a)
    assert all(set(r) == {A, B, D} and "_requests" not in r[A] for r in rounds)


def test_bench_ratios_and_targets_report_median_spread_and_verdict() -> None:
    b = bench(3)
    b.out["rounds"] = [{A: {"output_tok_per_s": a}, B: {"output_tok_per_s": w}, D: {"output_tok_per_s": d}}
                       for a, w, d in ((100, 90, 101), (100, 105, 99), (100, 80, 100))]
    b.out["variants"] = dict(b.out["rounds"][0])
    b.ratios()
    r = b.out["ratios"]
    assert r["a_over_b"] == 1.111 and r["a_over_b_spread"] == [0.952, 1.25]
    assert r["a_over_d"] == 1.0 and r["a_over_d_spread"] == [0.99, 1.01]
    checks = throughput.targets(b.out, argparse.Namespace(max_in_flight=12))
    assert checks["a_over_b >= 1.2"]["verdict"] == "no difference"
    assert checks["a_over_d >= 0.85"]["verdict"] == "no difference"


def test_quick_mode_still_runs_three_rounds(monkeypatch) -> None:
    monkeypatch.setenv("BENCH_QUICK", "1")
    args = throughput.parse_args([])
    assert args.quick and args.rounds >= 3 and args.dialogues == 24


def test_memory_is_pss_summed_over_the_process_tree() -> None:
    own = pss_bytes(os.getpid())
    assert own and own > 2**20
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    try:
        with MemorySampler(interval=0.05) as sampler:
            while (pss_bytes(child.pid) or 0) < 2**20:  # until the child has started
                pass
    finally:
        child.kill()
        child.wait()
    figures = sampler.figures()
    assert figures["peak_pss_mib"] > figures["peak_pss_main_process_mib"] > 1
    assert pss_bytes(child.pid) is None  # gone: counted as nothing, not an error
