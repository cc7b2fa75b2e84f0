"""The max_in_flight sweep as a PNG: output tok/s of the interleaved scheduler against max_in_flight, with the
waves and replay figures at the main concurrency for reference."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_sweep(points: Sequence[dict[str, Any]], path: Path, *, reference: dict[str, Any] | None = None,
               title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(points, key=lambda p: p["max_in_flight"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [p["max_in_flight"] for p in points]
    ax.plot(xs, [p["output_tok_per_s"] for p in points], "o-", label="(a) interleaved scheduler")
    for p in points:  # the machine's load average beside each point: other jobs slow a point down
        load = f"\nload {p['mean_load_average']:.1f}" if p.get("mean_load_average") is not None else ""
        ax.annotate(f"{p['output_tok_per_s']:.0f}{load}", (p["max_in_flight"], p["output_tok_per_s"]),
                    textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    for k, (name, marker) in enumerate((("waves", "s"), ("replay", "^"))):
        ref = (reference or {}).get(name)
        if ref:  # a little to the right of their max_in_flight, so the labels stay readable
            ax.plot([ref["max_in_flight"] * (1.08 + 0.08 * k)], [ref["output_tok_per_s"]], marker, markersize=9,
                    label={"waves": "(b) waves", "replay": "(d) replay bound"}[name])
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("max_in_flight (conversations active at once)")
    ax.set_ylabel("output tokens / s")
    top = max([p["output_tok_per_s"] for p in points]
              + [r["output_tok_per_s"] for r in (reference or {}).values() if r])
    ax.set_ylim(0, top * 1.25)
    ax.set_title(title or "throughput against max_in_flight")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
