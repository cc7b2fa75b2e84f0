"""What per-turn sampling seeds cost: the same workload with `sampling_seeds: per_turn` and `none`, on one engine.

    python -m benchmarks.seeds                       # 48 dialogues of 4 turns, rounds on,off,off,on,on,off
    python -m benchmarks.seeds --dialogues 24 --order on,off,off,on

vLLM's sampler gives every request that carries a seed its own torch generator and samples those requests one
by one; requests without a seed share one batched draw. This measures what that costs a real run: a Generation
(the project's scheduler) on already-open engines, each round from a cold prefix cache, the settings alternated
(on, off, off, on, ...) so that drift on a shared machine does not fall on one side. A short warm-up runs first.
Figures per round: output tok/s, output tokens per CPU second of the process tree (less sensitive to other
jobs), and how many dialogues are word for word those of the setting's first round (the rounds repeat the same
schedule, so this is reproducibility at its best case). The ratio none / per_turn is given of the means and per
pair of neighbouring rounds (on a shared machine the pairs see the same load). The dialogues differ between the
settings (other random draws), so token counts differ a little too.

Progress goes to stderr, vLLM's log to WORK/engine.log, the results (with the machine) to
benchmarks/results/seeds-*.json, and the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT, MemorySampler, fds_to, figures, log, machine, write_results

SETTINGS = {"on": "per_turn", "off": "none"}
# Shorter turns than the embedded default (64/96 tokens) keep a round near a minute on 2 CPU cores.
DEFAULT_SET = ("conversation.max_turns=4", "user.sampling.max_tokens=32", "recommender.sampling.max_tokens=48",
               "dialogues_per_shard=1000")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "embedded.yaml"), help="generation config")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help=f"config overrides (each --set replaces all of the defaults: {' '.join(DEFAULT_SET)})")
    parser.add_argument("--dialogues", type=int, default=48, help="dialogues per round")
    parser.add_argument("--order", default="on,off,off,on,on,off", help="rounds: on (per_turn) or off (none)")
    parser.add_argument("--warmup", type=int, default=4, help="warm-up dialogues (not timed)")
    parser.add_argument("--work", default="/tmp/interplay-bench-seeds", help="corpora and the vLLM log")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON goes")
    args = parser.parse_args(argv)
    args.order = [x.strip() for x in args.order.split(",") if x.strip()]
    if not set(args.order) <= set(SETTINGS) or not {"on", "off"} <= set(args.order):
        parser.error("--order: a comma-separated list of on and off, holding both")
    return args


async def rounds(args: argparse.Namespace, config: Any) -> list[dict[str, Any]]:
    from benchmarks.interleaved import run_interleaved
    from benchmarks.replay import reset_prefix_caches
    from benchmarks.throughput import with_run
    from interplay.generator.runtime.engine import open_engines

    work = Path(args.work)
    started = time.perf_counter()
    async with open_engines(config) as clients:
        log(f"engine up in {time.perf_counter() - started:.1f} s")
        if args.warmup:
            await run_interleaved(with_run(config, num_dialogues=args.warmup), clients, work / "warmup")
        out: list[dict[str, Any]] = []
        firsts: dict[str, dict[int, list[str]]] = {}  # setting -> its first round's texts
        for k, name in enumerate(args.order):
            cfg = with_run(config, num_dialogues=args.dialogues, sampling_seeds=SETTINGS[name])
            await reset_prefix_caches(clients)
            with MemorySampler() as rss:
                wall, requests, _ = await run_interleaved(cfg, clients, work / f"round-{k}-{name}")
            cpu = rss.figures()
            result = {"round": k, "sampling_seeds": cfg.sampling_seeds, **figures(requests, wall, args.dialogues),
                      "cpu_s": cpu.get("cpu_s"), "mean_load_average": cpu.get("mean_load_average")}
            result["output_tok_per_cpu_s"] = round(result["output_tokens"] / result["cpu_s"], 2) \
                if result["cpu_s"] else None
            texts = dialogue_texts(work / f"round-{k}-{name}")
            first = firsts.setdefault(name, texts)
            result["identical_to_first_round"] = None if first is texts else sum(
                texts.get(i) == t for i, t in first.items())
            log(f"round {k} {cfg.sampling_seeds}: {result['output_tok_per_s']:.1f} output tok/s "
                f"({result['output_tokens']} tokens in {wall:.1f} s)")
            out.append(result)
    return out


def dialogue_texts(corpus: Path) -> dict[int, list[str]]:
    """conversation_index -> the raw text of each turn."""
    import pyarrow.parquet as pq

    rows = [r for shard in sorted(corpus.glob("shard-*.parquet")) for r in pq.read_table(shard).to_pylist()]
    return {r["conversation_index"]: [t["raw_text"] for t in r["turns"]] for r in rows}


def paired(results: list[dict[str, Any]], key: str) -> list[float]:
    """none / per_turn for each pair of neighbouring rounds of different settings, left to right."""
    ratios, k = [], 0
    while k + 1 < len(results):
        a, b = results[k], results[k + 1]
        if a["sampling_seeds"] != b["sampling_seeds"] and a[key] and b[key]:
            on, off = (a, b) if a["sampling_seeds"] == "per_turn" else (b, a)
            ratios.append(round(off[key] / on[key], 3))
            k += 2
        else:
            k += 1
    return ratios


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per setting: mean, min and max of the rounds; and the ratio none / per_turn of the means."""
    by: dict[str, Any] = {}
    for setting in SETTINGS.values():
        mine = [r for r in results if r["sampling_seeds"] == setting]
        by[setting] = {key: {"mean": round(statistics.mean(v), 2), "min": min(v), "max": max(v)}
                       for key in ("output_tok_per_s", "output_tok_per_cpu_s")
                       if (v := [r[key] for r in mine if r[key] is not None])}
    ratios = {key: round(by["none"][key]["mean"] / by["per_turn"][key]["mean"], 3)
              for key in ("output_tok_per_s", "output_tok_per_cpu_s") if key in by["none"] and key in by["per_turn"]}
    pairs = {key: paired(results, key) for key in ("output_tok_per_s", "output_tok_per_cpu_s")}
    # Within noise unless every pair of neighbouring rounds puts the same setting ahead.
    tok = pairs["output_tok_per_s"]
    consistent = bool(tok) and (all(r > 1 for r in tok) or all(r < 1 for r in tok))
    identical = {setting: [r["identical_to_first_round"] for r in results
                           if r["sampling_seeds"] == setting and r["identical_to_first_round"] is not None]
                 for setting in SETTINGS.values()}
    return {"by_setting": by, "none_over_per_turn": ratios, "none_over_per_turn_paired": pairs,
            "median_paired": {k: statistics.median(v) for k, v in pairs.items() if v},
            "difference_beyond_noise": consistent, "identical_dialogues_vs_first_round": identical}


def main(argv: list[str] | None = None) -> int:
    from interplay.generator.config import load_config, parse_override

    args = parse_args(argv)
    config = load_config(args.config, dict(parse_override(s) for s in (args.set or DEFAULT_SET)))
    out: dict[str, Any] = {"benchmark": "seeds", "machine": machine(),
                           "settings": {"config": args.config, "set": args.set or list(DEFAULT_SET),
                                        "dialogues": args.dialogues, "order": args.order, "warmup": args.warmup}}
    started = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log(f"sampling seeds on and off, rounds {','.join(args.order)}; vLLM log: {work / 'engine.log'}")
    with fds_to(work / "engine.log"):
        out["rounds"] = asyncio.run(rounds(args, config))
    out.update(summary(out["rounds"]))
    out["total_wall_s"] = round(time.perf_counter() - started, 1)
    out["results"] = str(write_results("seeds", out, Path(args.results)))
    log(f"none / per_turn: {out['none_over_per_turn']}; results: {out['results']}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
