"""Throughput benchmark: this project's scheduler against the alternatives, on the same seeds, the same model and
the same machine, in one invocation (`make bench`).

    (a) interleaved   this project's scheduler (interleaved.py): a real run, max_in_flight conversations active
    (b) waves         turn-synchronous waves (waves.py): what a simple script over LLM.chat does
    (c) sequential    one conversation at a time (sequential.py), what ParlAI-style self-chat does; small sample
    (d) replay        the exact prompts of (a), each forced to the output length it had, with no turn
                      dependencies at the same concurrency (replay.py): the engine's own throughput on (a)'s token
                      mix, which no scheduler can beat
    topologies        shared vs separate vs shared with a LoRA adapter per role (topologies.py), small sample
    sweep             (a) at several max_in_flight values, plotted (plot.py)
    server            (a) on the in-process engine against (a) through `vllm serve` (topology: server) on the
                      same model and sizes (server.py): the server's tok/s as a share of the in-process run's
    orchestration     interplay's own overhead per turn on a zero-latency fake engine, and peak RSS at two corpus
                      sizes (orchestration.py)

Engines start once per topology; a short warm-up runs first, and every variant starts from a cold prefix cache
(the variants generate the same conversations). (a), (b) and (d) run in rounds of alternating order (a b d,
d b a, ...: rounds.py). Figures per variant: dialogues/s, output tok/s, prompt tok/s, cached-prompt share, peak
memory of this process and its engine processes (PSS, so pages they share count once). Ratios: a/d (scheduler
efficiency), a/b, a/c, each the median over rounds with its spread (min..max); a ratio whose spread contains 1.0
is "no difference". Progress goes to stderr, vLLM's own log to WORK/engine.log, the results (with the machine's
description) to benchmarks/results/, and the last line of stdout is one JSON object with every figure.

Every size is a flag or an environment variable (flags win); BENCH_QUICK=1 (or --quick) makes all of them small.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import throughput_args
from benchmarks.common import (
    MemorySampler,
    fds_to,
    figures,
    log,
    machine,
    recording,
    write_results,
)
from benchmarks.rounds import round_orders, round_ratios, spread, verdict
from benchmarks.throughput_args import SIZES

TARGETS = {"a_over_d_min": 0.85, "a_over_b_min": 1.2, "orchestration_turns_per_s_min": 3000,
           "orchestration_rss_ratio_max": 1.10}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return throughput_args.parse_args(argv, description=__doc__.split("\n\n")[0])


def with_run(config: Any, **values: Any) -> Any:
    from interplay.generator.config import GenerateConfig

    return GenerateConfig.model_validate({**config.model_dump(), **values})


def with_cpu(result: dict[str, Any]) -> dict[str, Any]:
    """Add output tokens per CPU second of the process tree: less sensitive to other jobs on the machine."""
    result["output_tok_per_cpu_s"] = round(result["output_tokens"] / result["cpu_s"], 2) if result.get("cpu_s") \
        else None
    return result


class Bench:
    def __init__(self, args: argparse.Namespace):
        from interplay.generator.config import load_config, parse_override
        from interplay.generator.runtime.engine import check_config

        self.args = args
        self.config = load_config(args.config, dict(parse_override(s) for s in args.set))
        check_config(self.config)
        self.work = Path(args.work)
        self.out: dict[str, Any] = {"variants": {}, "ratios": {}, "topologies": {}, "sweep": [], "errors": {}}
        c = self.config
        # The topology the main engine serves; the other two are started one after the other at the end.
        self.main_topology = "separate" if c.topology == "separate" else (
            "shared-lora" if c.user.adapter or c.recommender.adapter else "shared")

    # -- helpers ----------------------------------------------------------------------------------------------

    def corpus_dir(self, name: str) -> Path:
        path = self.work / "corpora" / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    async def interleaved(self, clients: dict[str, Any], name: str, num: int, max_in_flight: int,
                          config: Any = None) -> dict[str, Any]:
        from benchmarks.interleaved import run_interleaved
        from benchmarks.replay import reset_prefix_caches

        await reset_prefix_caches(clients)
        cfg = with_run(config or self.config, num_dialogues=num, max_in_flight=max_in_flight)
        with MemorySampler() as memory:
            wall, requests, _ = await run_interleaved(cfg, clients, self.corpus_dir(name))
        result = with_cpu({"max_in_flight": max_in_flight, **figures(requests, wall, num), **memory.figures()})
        result["_requests"] = requests
        return result

    async def warmup(self, clients: dict[str, Any], name: str, config: Any = None) -> None:
        from benchmarks.interleaved import run_interleaved

        n = self.args.warmup
        if n > 0:
            started = time.perf_counter()
            await run_interleaved(with_run(config or self.config, num_dialogues=n, max_in_flight=n), clients,
                                  self.corpus_dir(f"warmup-{name}"))
            log(f"  warm-up: {n} dialogues in {time.perf_counter() - started:.1f} s")

    def section(self, name: str) -> bool:
        return name not in self.args.skip

    def failed(self, name: str, error: BaseException) -> None:
        self.out["errors"][name] = f"{type(error).__name__}: {error}"
        log(f"{name} FAILED: {type(error).__name__}: {error}")
        traceback.print_exc()  # into WORK/engine.log

    # -- the sections -----------------------------------------------------------------------------------------

    async def variant(self, name: str, clients: dict[str, Any], cfg: Any, requests: list | None,
                      tag: str) -> dict[str, Any]:
        """One timed run of (a), (b) or (d); (d) replays `requests`, the latest (a)'s."""
        from benchmarks.replay import reset_prefix_caches, run_replay
        from benchmarks.waves import run_waves

        n, mif = cfg.num_dialogues, cfg.max_in_flight
        if name == "a_interleaved":
            log(f"(a) interleaved scheduler: {n} dialogues, max_in_flight={mif}{tag}")
            result = await self.interleaved(clients, "a-interleaved", n, mif)
        elif name == "b_waves":
            log(f"(b) turn-synchronous waves: {n} dialogues, max_in_flight={mif}{tag}")
            await reset_prefix_caches(clients)
            recorded, rlog = recording(clients)
            with MemorySampler() as memory:
                wall, info = await run_waves(cfg, recorded, self.corpus_dir("b-waves"))
            result = with_cpu({"max_in_flight": mif, **figures(rlog.requests, wall, n), **info, **memory.figures()})
        else:
            log(f"(d) replay bound: the {len(requests)} requests of (a), max_in_flight={mif}{tag}")
            await reset_prefix_caches(clients)
            with MemorySampler() as memory:
                wall, done, mismatches = await run_replay(clients, requests, max_in_flight=mif)
            result = with_cpu({"max_in_flight": mif, **figures(done, wall, n),
                               "output_length_mismatches": mismatches, **memory.figures()})
        log(f"  {result['output_tok_per_s']:.0f} output tok/s")
        return result

    async def rounds(self, clients: dict[str, Any], cfg: Any) -> list[dict[str, Any]]:
        """(a), (b), (d) on the same engine, args.rounds times, in alternating order; a round whose (d) comes
        before its (a) replays the previous round's (a) (the same seeds: the same conversations)."""
        names = ["a_interleaved"] + [v for v, section in (("b_waves", "waves"), ("d_replay", "replay"))
                                     if self.section(section)]
        requests = None
        out = []
        for r, order in enumerate(round_orders(names, self.args.rounds)):
            rnd: dict[str, Any] = {}
            tag = f" (round {r + 1} of {self.args.rounds})"
            for name in order:
                try:
                    rnd[name] = await self.variant(name, clients, cfg, requests, tag)
                except Exception as e:
                    if name == "a_interleaved":
                        raise
                    self.failed(f"{name}{tag}", e)
                    continue
                if name == "a_interleaved":
                    requests = rnd[name].pop("_requests")
            out.append(rnd)
        return out

    async def main_engine(self) -> None:
        from benchmarks.replay import reset_prefix_caches
        from benchmarks.sequential import run_sequential
        from interplay.generator.runtime.engine import open_engines

        args, variants = self.args, self.out["variants"]
        n, mif = args.dialogues, args.max_in_flight
        cfg = with_run(self.config, num_dialogues=n, max_in_flight=mif)
        log(f"starting the engine ({cfg.topology}, {cfg.engine_args('user')['model']})")
        started = time.perf_counter()
        async with open_engines(cfg) as clients:
            self.out["topologies"].setdefault(self.main_topology, {})["startup_s"] = round(
                time.perf_counter() - started, 1)
            log(f"  engine up in {time.perf_counter() - started:.1f} s")
            await self.warmup(clients, "main")

            rounds = self.out["rounds"] = await self.rounds(clients, cfg)
            a = rounds[0]["a_interleaved"]
            variants.update(rounds[0])  # the first round's figures; every round's are under "rounds"

            if self.section("sequential"):
                k = args.sequential
                log(f"(c) one conversation at a time: {k} dialogues")
                try:
                    await reset_prefix_caches(clients)
                    with MemorySampler() as memory:
                        wall, requests = await run_sequential(cfg, clients, self.corpus_dir("c-sequential"), k)
                    variants["c_sequential"] = with_cpu({"max_in_flight": 1, **figures(requests, wall, k),
                                                         **memory.figures()})
                    log(f"  {variants['c_sequential']['output_tok_per_s']:.0f} output tok/s")
                except Exception as e:
                    self.failed("sequential", e)

            if self.section("sweep"):
                for m in args.sweep:
                    num = max(args.sweep_min_dialogues, 2 * m)
                    if m == mif and num == n:
                        point = a
                    else:
                        log(f"sweep: max_in_flight={m}, {num} dialogues")
                        try:
                            point = await self.interleaved(clients, f"sweep-{m}", num, m)
                        except Exception as e:
                            self.failed(f"sweep-{m}", e)
                            continue
                    self.out["sweep"].append({k: v for k, v in point.items() if not k.startswith("_")})
                    log(f"  max_in_flight={m}: {point['output_tok_per_s']:.0f} output tok/s")

            if self.section("topologies"):
                await self.topology(clients, self.main_topology, None)

    async def topology(self, clients: dict[str, Any] | None, name: str, cfg: Any) -> None:
        num, mif = self.args.topology_dialogues, self.args.topology_max_in_flight
        log(f"topology {name}: {num} dialogues, max_in_flight={mif}")
        try:
            if clients is None:
                from interplay.generator.runtime.engine import open_engines

                started = time.perf_counter()
                async with open_engines(cfg) as opened:
                    self.out["topologies"].setdefault(name, {})["startup_s"] = round(time.perf_counter() - started, 1)
                    log(f"  engines up in {time.perf_counter() - started:.1f} s")
                    await self.warmup(opened, name, cfg)
                    result = await self.interleaved(opened, f"topology-{name}", num, mif, cfg)
            else:
                result = await self.interleaved(clients, f"topology-{name}", num, mif)
            result.pop("_requests")
            self.out["topologies"].setdefault(name, {}).update(result)
            log(f"  {result['output_tok_per_s']:.0f} output tok/s, peak PSS {result['peak_pss_mib'] / 1024:.1f} GiB")
        except Exception as e:
            self.failed(f"topology-{name}", e)

    async def other_topologies(self) -> None:
        from benchmarks.topologies import TOPOLOGIES, topology_config

        base = with_run(self.config, num_dialogues=self.args.topology_dialogues,
                        max_in_flight=self.args.topology_max_in_flight)
        for name in (t for t in TOPOLOGIES if t != self.main_topology):
            try:
                cfg = topology_config(base, name, self.work)
            except Exception as e:
                self.failed(f"topology-{name}", e)
                continue
            await self.topology(None, name, cfg)

    def ratios(self) -> None:
        """a/d, a/b, a/c on output tok/s (and on dialogues/s, and per CPU second): each the median over rounds,
        with its spread (min..max) under <ratio>_spread. And d/b: the replay bound over waves, the most that any
        scheduler could gain over waves on this engine and token mix (a <= d)."""
        v, r = self.out["variants"], self.out["ratios"]
        rounds = self.out.get("rounds") or [v]
        for this, other, key in (("a_interleaved", "d_replay", "a_over_d"), ("a_interleaved", "b_waves", "a_over_b"),
                                 ("a_interleaved", "c_sequential", "a_over_c"), ("d_replay", "b_waves", "d_over_b")):
            for suffix, field in (("", "output_tok_per_s"), ("_dialogues_per_s", "dialogues_per_s"),
                                  ("_per_cpu_s", "output_tok_per_cpu_s")):
                if values := round_ratios(rounds, this, other, field, fallback=v):
                    summary = spread(values)
                    r[key + suffix] = summary["median"]
                    r[key + suffix + "_spread"] = [summary["min"], summary["max"]]
        r["scheduler_efficiency"] = r.get("a_over_d")


def targets(out: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    r, orch = out["ratios"], out.get("orchestration") or {}
    checks: dict[str, Any] = {}
    for key, minimum, extra in (("a_over_d", TARGETS["a_over_d_min"], {"max_in_flight": args.max_in_flight}),
                                ("a_over_b", TARGETS["a_over_b_min"], {"ceiling_d_over_b": r.get("d_over_b")})):
        if r.get(key) is not None:
            low, high = r[key + "_spread"]
            checks[f"{key} >= {minimum}"] = {"value": r[key], "spread": [low, high],
                                             "verdict": verdict({"median": r[key], "min": low, "max": high}, minimum),
                                             **extra}
    if (server := out.get("server")) is not None:
        checks.update({f"server row: {k}": {"met": v, "value": server["server_over_in_process"]
                                            if "tok/s" in k or "in_process" in k else server["cached_share_points"]}
                       for k, v in server["targets"].items()})
    if orch.get("turns_per_s") is not None:
        target = TARGETS["orchestration_turns_per_s_min"]
        checks["orchestration >= 3000 turns/s"] = {
            "value": orch["turns_per_s"], "met": orch["turns_per_s"] >= target,
            "per_cpu_second": orch.get("turns_per_cpu_s"),
            "met_per_cpu_second": (orch.get("turns_per_cpu_s") or 0) >= target}
        checks["peak RSS at the largest size within 10% of the smallest"] = {
            "value": orch["peak_rss_ratio_largest_to_smallest"],
            "met": orch["peak_rss_ratio_largest_to_smallest"] <= TARGETS["orchestration_rss_ratio_max"]}
    return checks


async def run_engines(bench: Bench) -> None:
    try:
        await bench.main_engine()
    except Exception as e:
        bench.failed("main engine", e)
    if bench.section("topologies"):
        await bench.other_topologies()
    if bench.section("server"):
        from benchmarks.server import measure

        log("server row: the in-process engine, then the same model behind vllm serve")
        try:
            bench.out["server"] = await measure(bench.config, bench.work / "server-row",
                                                num_dialogues=bench.args.server_dialogues,
                                                max_in_flight=bench.args.server_max_in_flight,
                                                num_warmup=bench.args.warmup)
        except Exception as e:
            bench.failed("server", e)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    bench = Bench(args)
    out = bench.out
    out["machine"] = machine()
    out["settings"] = {"config": args.config, "set": args.set, "quick": args.quick,
                       **{name: getattr(args, name) for name in SIZES}, "skip": sorted(args.skip)}
    log(f"interplay throughput benchmark ({'quick' if args.quick else 'full'}); "
        f"vLLM log: {bench.work / 'engine.log'}")
    if bench.section("orchestration"):
        from benchmarks.orchestration import DEFAULT_SETTINGS, measure

        try:
            out["orchestration"] = measure(args.orchestration, config_path=args.config,
                                           settings=list(DEFAULT_SETTINGS), tokenizer="smollm2")
        except Exception as e:
            bench.failed("orchestration", e)
    bench.work.mkdir(parents=True, exist_ok=True)
    with fds_to(bench.work / "engine.log"):
        asyncio.run(run_engines(bench))
    bench.ratios()
    out["targets"] = targets(out, args)
    for name, check in out["targets"].items():
        if "verdict" in check:
            log(f"{name}: median {check['value']} over {args.rounds} rounds, spread {check['spread'][0]}.."
                f"{check['spread'][1]}: {check['verdict']}")
    results = Path(args.results)
    if out["sweep"]:
        from benchmarks.plot import plot_sweep

        reference = {k: out["variants"].get(v) for k, v in (("waves", "b_waves"), ("replay", "d_replay"))}
        model = Path(bench.config.engine_args("user")["model"]).name
        out["plot"] = str(plot_sweep(out["sweep"], results / "max_in_flight_sweep.png", reference=reference,
                                     title=f"{model}, {out['machine']['usable_cpus']} CPUs: output tok/s"))
    out["total_wall_s"] = round(time.perf_counter() - started, 1)
    out["results"] = str(write_results("throughput", out, results))
    if not out["errors"]:
        del out["errors"]
    log(f"done in {out['total_wall_s']:.0f} s; results: {out['results']}")
    print(json.dumps(out))
    return 0 if "errors" not in out else 1


if __name__ == "__main__":
    sys.exit(main())
