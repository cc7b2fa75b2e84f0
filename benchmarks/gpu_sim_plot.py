"""Where the simulated GPU's time goes, per variant, as a PNG: one row per results file of benchmarks/gpu_sim.py
(before and after a change, say), at one max_in_flight and spread.

    python -m benchmarks.gpu_sim_plot benchmarks/results/gpu-sim-A.json=before benchmarks/results/gpu-sim-B.json=after \
        --max-in-flight 1024 --spread 0.35 --out docs/img/gpu-sim-1024.png

Panels, each for (a) interleaved, (b) waves, (d) replay bound: simulated seconds by term of the step cost (decode
floor, decode per sequence above the knee, prefill); prompt tokens computed and served from the prefix cache;
the KV cache's mean occupancy (held by running requests, cached for reuse) with the blocks evicted; and per step,
the sequences decoded and the prompt tokens computed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

VARIANTS = {"a_interleaved": "(a)", "b_waves": "(b)", "d_replay": "(d)"}


def load_run(path: str, max_in_flight: int, spread: float) -> dict[str, Any]:
    runs = json.loads(Path(path).read_text())["runs"]
    for run in runs:
        if run["max_in_flight"] == max_in_flight and run["spread"] == spread:
            return run
    raise SystemExit(f"{path}: no run at max_in_flight {max_in_flight}, spread {spread}")


def plot_terms(rows: list[tuple[str, dict[str, Any]]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 4, figsize=(15, 3.6 * len(rows)), squeeze=False)
    names = list(VARIANTS.values())
    for (label, run), ax in zip(rows, axes):
        v = [run["variants"][k] for k in VARIANTS]
        stack(ax[0], names, {"decode floor": [x["time_s"]["decode_floor"] for x in v],
                             "decode per sequence": [x["time_s"]["decode_per_seq"] for x in v],
                             "prefill": [x["time_s"]["prefill"] for x in v]}, "simulated seconds")
        ax[0].set_title(f"{label}: time by term (a/b {run['a_over_b']}, a/d {run['a_over_d']})", fontsize=9)
        prompt = [x["mean_prompt_tokens"] * x["num_requests"] / 1e6 for x in v]
        computed = [x["prefill_tokens"] / 1e6 for x in v]
        stack(ax[1], names, {"computed": computed, "prefix-cached": [p - c for p, c in zip(prompt, computed)]},
              "prompt tokens (millions)")
        ax[1].set_title("prompt tokens", fontsize=9)
        stack(ax[2], names, {"held by running requests": [x["kv_held"] for x in v],
                             "cached for reuse": [x["kv_cached"] for x in v]}, "share of the KV cache (mean)")
        for k, x in enumerate(v):
            ax[2].annotate(f"{x['evicted_blocks'] / 1000:.0f}k evicted", (k, x["kv_held"] + x["kv_cached"]),
                           textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
        ax[2].set_ylim(0, 1.3)
        ax[2].set_title("KV cache occupancy, blocks evicted ((d): a cache that never fills)"
                        if v[2]["evicted_blocks"] == 0 else "KV cache occupancy, blocks evicted", fontsize=9)
        per_step = {"decode sequences": [x["output_tokens"] / x["num_steps"] for x in v],
                    "prompt tokens computed": [x["prefill_tokens"] / x["num_steps"] for x in v]}
        width = 0.4
        for j, (name, values) in enumerate(per_step.items()):
            ax[3].bar([k + (j - 0.5) * width for k in range(len(v))], values, width, label=name)
        ax[3].set_xticks(range(len(v)), names)
        ax[3].set_ylabel("per step (mean)")
        ax[3].set_title("per step", fontsize=9)
        ax[3].legend(fontsize=7)
    for column in (0, 1, 3):  # the same scale in every row, with room for the legend above the bars
        top = max(a.get_ylim()[1] for a in axes[:, column])
        for a in axes[:, column]:
            a.set_ylim(0, top * 1.3)
    fig.suptitle(f"SIMULATION (benchmarks/gpu_model.py), max_in_flight {rows[0][1]['max_in_flight']}, "
                 f"reply-length spread {rows[0][1]['spread']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def stack(ax: Any, names: list[str], parts: dict[str, list[float]], ylabel: str) -> None:
    bottom = [0.0] * len(names)
    for label, values in parts.items():
        ax.bar(names, values, bottom=bottom, label=label)
        bottom = [b + x for b, x in zip(bottom, values)]
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_sim_plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", metavar="FILE[=LABEL]", help="gpu-sim results, one row each")
    parser.add_argument("--max-in-flight", type=int, default=1024)
    parser.add_argument("--spread", type=float, default=0.35)
    parser.add_argument("--out", default="docs/img/gpu-sim-1024.png")
    args = parser.parse_args(argv)
    rows = []
    for spec in args.results:
        path, _, label = spec.partition("=")
        rows.append((label or Path(path).stem, load_run(path, args.max_in_flight, args.spread)))
    print(plot_terms(rows, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
