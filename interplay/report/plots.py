"""The report's PNG plots (matplotlib, headless). One corpus or several side by side, same axes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROLES = ("user", "recommender")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_all(corpora: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """corpora: [{"label", "metrics", "distributions"}]; returns the written files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [f(corpora, out_dir) for f in (_lengths, _outcomes, _quality)]


def _lengths(corpora: Sequence[dict[str, Any]], out_dir: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    series = [("turns per dialogue", lambda d: d["turns"])] + [
        (f"{role} utterance length (words)", lambda d, r=role: d["utterance_words"][r]) for role in ROLES]
    for ax, (title, get) in zip(axes, series):
        values = [get(c["distributions"]) for c in corpora]
        top = max((max(v) for v in values if v), default=1)
        # The same bin edges for every corpus, so the bars line up.
        bins = [k - 0.5 for k in range(0, top + 2)] if top <= 40 else [top * k / 40 for k in range(41)]
        for c, v in zip(corpora, values):
            if v:
                ax.hist(v, bins=bins, alpha=0.55, density=True, label=c["label"])
        ax.set_title(title)
        ax.set_ylabel("share")
        ax.legend()
    fig.tight_layout()
    path = out_dir / "lengths.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _outcomes(corpora: Sequence[dict[str, Any]], out_dir: Path) -> Path:
    plt = _pyplot()
    names = sorted({o for c in corpora for o in c["metrics"]["outcomes"]})
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(corpora)
    for k, c in enumerate(corpora):
        shares = [(c["metrics"]["outcomes"].get(o) or {}).get("share") or 0 for o in names]
        ax.bar([i + k * width for i in range(len(names))], shares, width=width, label=c["label"])
    ax.set_xticks([i + width * (len(corpora) - 1) / 2 for i in range(len(names))], names)
    ax.set_ylabel("share of dialogues")
    ax.set_title("outcomes")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "outcomes.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _quality(corpora: Sequence[dict[str, Any]], out_dir: Path) -> Path:
    plt = _pyplot()
    from interplay.report.render import quality_rows

    rows = quality_rows([c["metrics"] for c in corpora])
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(corpora)
    for k, c in enumerate(corpora):
        values = [v[k] if v[k] is not None else 0 for _, v in rows]
        ax.bar([i + k * width for i in range(len(rows))], values, width=width, label=c["label"])
    ax.set_xticks([i + width * (len(corpora) - 1) / 2 for i in range(len(rows))], [n for n, _ in rows],
                  rotation=35, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title("diversity and task figures (0..1)")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "quality.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
