"""Orchestration overhead alone: interplay's real run (Generation: plan, scheduler, prompt rendering and
tokenisation, reply parsing, grounding against the catalog, rows, Parquet shards, manifest) driven by the
zero-latency fake engine of zero_latency.py, so nothing waits for a model.

    python -m benchmarks.orchestration                        # 10,000 and 100,000 dialogues, one process each
    python -m benchmarks.orchestration --sizes 1000 --tokenizer simple

Each size runs in a fresh process, so each peak RSS is that run's own. The last stdout line is a JSON object:
turns/s, dialogues/s, turns per CPU second (the run is one thread, so this is what it does on a core of its own
however busy the machine is) and peak RSS per size, and the ratio of the peak RSS of the largest to the smallest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, log, self_peak_rss_mb
from benchmarks.zero_latency import make_tokenizer, zero_latency_open_engines

DEFAULT_SIZES = (10_000, 100_000)
# Run settings of the measurement (not of the model): as many in flight as the GPU configs, big shards.
DEFAULT_SETTINGS = ("max_in_flight=128", "dialogues_per_shard=1000")


def run_orchestration(config: Any, out_dir: str | Path, *, tokenizer: str = "smollm2",
                      num_titles: int = 500) -> dict[str, Any]:
    """One run of `config.num_dialogues` dialogues on the zero-latency engine; the figures of that run."""
    from interplay.generator.runtime.run import Generation

    tok = make_tokenizer(tokenizer, config.engine_args("user")["model"] if tokenizer == "smollm2" else None)
    generation = Generation(config, out_dir, overwrite=True)
    titles = [item.display for item, _ in zip(generation.catalog, range(num_titles))]
    open_engines = zero_latency_open_engines(tok, titles)
    started, cpu_started = time.perf_counter(), time.process_time()
    manifest = asyncio.run(generation.run(open_engines))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    turns = sum(c.num_calls for c in open_engines.clients.values())
    totals = manifest["totals"]
    return {
        "num_dialogues": totals["num_dialogues"],
        "num_turns": turns,
        "wall_s": round(wall, 2),
        "turns_per_s": round(turns / wall, 1),
        "dialogues_per_s": round(totals["num_dialogues"] / wall, 1),
        # The run is one thread: CPU seconds are what it costs on a core of its own, whatever else runs.
        "cpu_s": round(cpu, 2),
        "turns_per_cpu_s": round(turns / cpu, 1) if cpu > 0 else None,
        "load_average_after": round(os.getloadavg()[0], 2),
        "peak_rss_mb": self_peak_rss_mb(),
        "num_shards": manifest["num_shards"],
        "outcomes": totals["outcomes"],
        "tokenizer": tokenizer,
        "max_in_flight": config.max_in_flight,
    }


def _config(config_path: str, num_dialogues: int, settings: list[str]) -> Any:
    from interplay.generator.config import load_config, parse_override

    overrides = dict(parse_override(s) for s in settings)
    overrides["num_dialogues"] = num_dialogues
    return load_config(config_path, overrides)


def measure(sizes: list[int], *, config_path: str, settings: list[str], tokenizer: str,
            work_dir: Path | None = None) -> dict[str, Any]:
    """Each size in its own process; the figures of all of them."""
    own_tmp = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="interplay-orch-")) if own_tmp else work_dir
    runs = {}
    try:
        for n in sizes:
            log(f"orchestration: {n} dialogues on the zero-latency engine ({tokenizer} tokenizer)")
            cmd = [sys.executable, "-m", "benchmarks.orchestration", "--one", str(n), "--config", config_path,
                   "--tokenizer", tokenizer, "--out", str(work / f"n{n}"), *[a for s in settings for a in ("--set", s)]]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"orchestration run of {n} failed:\n{proc.stderr[-3000:]}")
            runs[str(n)] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = runs[str(n)]
            log(f"  {r['turns_per_s']:.0f} turns/s ({r['turns_per_cpu_s']:.0f} per CPU second), "
                f"peak RSS {r['peak_rss_mb']:.0f} MB")
            shutil.rmtree(work / f"n{n}", ignore_errors=True)
    finally:
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)
    small, large = runs[str(min(sizes))], runs[str(max(sizes))]
    return {"runs": runs, "turns_per_s": min(r["turns_per_s"] for r in runs.values()),
            "turns_per_cpu_s": min(r["turns_per_cpu_s"] or 0 for r in runs.values()),
            "peak_rss_ratio_largest_to_smallest": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
            "tokenizer": tokenizer}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="dialogue counts, comma-separated")
    parser.add_argument("--config", default=str(ROOT / "configs" / "embedded.yaml"))
    parser.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                        help=f"config override (default: {' '.join(DEFAULT_SETTINGS)})")
    parser.add_argument("--tokenizer", default="smollm2", choices=["smollm2", "simple"])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)   # internal: one run in this process
    parser.add_argument("--out", help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.orchestration", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = list(DEFAULT_SETTINGS) if args.set is None else args.set
    if args.one is not None:
        figures = run_orchestration(_config(args.config, args.one, settings), args.out, tokenizer=args.tokenizer)
        print(json.dumps(figures))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(json.dumps(measure(sizes, config_path=args.config, settings=settings, tokenizer=args.tokenizer)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
