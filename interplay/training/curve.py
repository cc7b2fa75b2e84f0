"""The loss curve of a training run: loss.json (the run's summary and per-step log) and loss.png (its plot)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_curve(out_dir: Path, summary: dict[str, Any]) -> None:
    (out_dir / "loss.json").write_text(json.dumps(summary, indent=2) + "\n")
    try:
        import matplotlib
    except ImportError:  # the `report` extra: the JSON is the record, the plot a convenience
        return
    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    steps = [e["step"] for e in summary["log"]]
    losses = [e["loss"] for e in summary["log"]]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, losses, marker="o" if len(steps) < 40 else None, markersize=3, alpha=0.5,
            label="training loss (batch)")
    if len(losses) >= 10:  # batch losses are noisy: a moving average shows the trend
        k = max(3, len(losses) // 10)
        windows = [losses[max(0, i - k + 1):i + 1] for i in range(len(losses))]
        ax.plot(steps, [sum(w) / len(w) for w in windows], color="tab:blue", label=f"moving average ({k} steps)")
    ev = summary["eval"]
    last = steps[-1] if steps else summary["steps"]
    curve = ev.get("curve") or [{"step": 0, "loss": ev["loss_before"]}, {"step": last, "loss": ev["loss_after"]}]
    ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], color="tab:red", marker="o", zorder=3,
            label=f"{ev['split']} loss ({ev['num_examples']} dialogues)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per role token")
    ax.set_title(f"{summary['role']} adapter on {Path(str(summary['base_model'])).name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png")
    plt.close(fig)
