"""The throughput benchmark's command line (throughput.py): its sizes, default settings and sections, each a flag
or an environment variable (flags win); BENCH_QUICK=1 (or --quick) makes every size small."""

from __future__ import annotations

import argparse
import os

from benchmarks.common import RESULTS, ROOT

# name -> (environment variable, full default, quick default, help)
SIZES: dict[str, tuple[str, str, str, str]] = {
    "dialogues": ("BENCH_DIALOGUES", "256", "24", "dialogues of (a), (b) and (d)"),
    "max_in_flight": ("BENCH_MAX_IN_FLIGHT", "128", "12", "max_in_flight of (a), (b) and (d)"),
    "sequential": ("BENCH_SEQUENTIAL", "4", "2", "dialogues of (c), one at a time"),
    "topology_dialogues": ("BENCH_TOPOLOGY_DIALOGUES", "16", "6", "dialogues per topology"),
    "topology_max_in_flight": ("BENCH_TOPOLOGY_MAX_IN_FLIGHT", "8", "6", "max_in_flight per topology"),
    "sweep": ("BENCH_SWEEP", "16,32,64,128", "4,12", "max_in_flight values of the sweep"),
    "sweep_min_dialogues": ("BENCH_SWEEP_MIN_DIALOGUES", "32", "8",
                            "a sweep point runs max(this, 2 x max_in_flight) dialogues"),
    "orchestration": ("BENCH_ORCH_SIZES", "10000,100000", "1000,10000", "dialogue counts of the orchestration runs"),
    "warmup": ("BENCH_WARMUP", "4", "2", "warm-up dialogues per engine (not timed)"),
    "server_dialogues": ("BENCH_SERVER_DIALOGUES", "32", "8", "dialogues of the server row, each side"),
    "server_max_in_flight": ("BENCH_SERVER_MAX_IN_FLIGHT", "16", "4", "max_in_flight of the server row"),
    "rounds": ("BENCH_ROUNDS", "3", "3", "rounds of (a), (b), (d) in alternating order; ratios: median and spread"),
}
# The benchmark's generation settings on top of the config: shorter dialogues than the embedded default (8 turns,
# 64/96 tokens), so that 256 dialogues take minutes, not an hour, on a 2-core CPU. Replace with BENCH_SET="k=v k=v"
# or --set (each --set replaces all of these).
DEFAULT_SET = ("conversation.max_turns=4", "user.sampling.max_tokens=32", "recommender.sampling.max_tokens=48",
               "dialogues_per_shard=1000")
SECTIONS = ("orchestration", "waves", "replay", "sequential", "sweep", "topologies", "server")

def parse_args(argv: list[str] | None, description: str = "") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=description)
    parser.add_argument("--config", default=os.environ.get("BENCH_CONFIG", str(ROOT / "configs" / "embedded.yaml")),
                        help="generation config (env BENCH_CONFIG; default configs/embedded.yaml)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help=f"generation setting (default: {' '.join(DEFAULT_SET)}; env BENCH_SET)")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
                        help="small sizes everywhere (env BENCH_QUICK=1)")
    for name, (env, full, quick, text) in SIZES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", help=f"{text} (env {env}; default {full}, quick {quick})")
    parser.add_argument("--skip", default=os.environ.get("BENCH_SKIP", ""),
                        help=f"comma-separated sections to leave out: {', '.join(SECTIONS)} (env BENCH_SKIP)")
    parser.add_argument("--work", default=os.environ.get("BENCH_WORK", "/tmp/interplay-bench"),
                        help="scratch directory for the corpora and vLLM's log (env BENCH_WORK)")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON and the plot go")
    args = parser.parse_args(argv)
    for name, (env, full, quick, _) in SIZES.items():
        value = getattr(args, name) or os.environ.get(env) or (quick if args.quick else full)
        if name in ("sweep", "orchestration"):
            value = [int(v) for v in str(value).split(",") if v.strip()]
        else:
            value = int(value)
        setattr(args, name, value)
    if args.set is None:
        args.set = os.environ["BENCH_SET"].split() if os.environ.get("BENCH_SET") else list(DEFAULT_SET)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if unknown := args.skip - set(SECTIONS):
        parser.error(f"--skip: unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    return args
