"""The report's PNG plots (matplotlib, headless). One corpus or several side by side, same axes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interplay.common.roles import ROLES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write (100 dpi) and close one figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_all(corpora: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """corpora: [{"label", "metrics", "distributions"}]; returns the written files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [f(corpora, out_dir) for f in (_success_match, _lengths, _outcomes, _quality)]


def _success_match(corpora: Sequence[dict[str, Any]], out_dir: Path) -> Path:
    """Per corpus, side by side: success rate and match score with their 95% intervals as error bars, the match
    score's chance level as a dashed line across its bar (a match score means something only above it); "n/a"
    where nothing was accepted."""
    from interplay.report.summary import headline_figures

    plt = _pyplot()
    figures = [headline_figures(c["metrics"]) for c in corpora]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(corpora) + 2), 4.5))
    width = 0.38
    xs = range(len(corpora))
    for offset, key, label in ((-width / 2, "success_rate", "success rate"), (width / 2, "match_score", "match score")):
        values = [f[key] or 0 for f in figures]
        ax.bar([x + offset for x in xs], values, width, label=label,
               yerr=_error_bars(values, [f[f"{key}_ci95"] for f in figures]), capsize=3)
    chance_labelled = False
    for x, f in zip(xs, figures):
        if f["match_score"] is None:
            ax.text(x + width / 2, 0.02, "n/a", ha="center", fontsize=8)
        if f["chance_match"] is not None:
            ax.hlines(f["chance_match"], x, x + width, colors="black", linestyles="dashed",
                      label=None if chance_labelled else "chance match")
            chance_labelled = True
    ax.set_xticks(list(xs), [c["label"] for c in corpora], rotation=20 if len(corpora) > 3 else 0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share")
    ax.set_title("success rate and match score\n(dashed: the match score's chance level)")
    ax.legend()
    return _save(fig, out_dir / "success_match.png")


def _error_bars(values: Sequence[float], intervals: Sequence[Sequence[float] | None]) -> list[list[float]]:
    """Matplotlib's asymmetric yerr, [below], [above], from [low, high] intervals; no bar where there is none.
    Clamped at 0: the value and its interval are rounded apart, so at 0 or 1 they can differ in the last place."""
    return [[max(v - i[0], 0.0) if i else 0.0 for v, i in zip(values, intervals)],
            [max(i[1] - v, 0.0) if i else 0.0 for v, i in zip(values, intervals)]]


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
    return _save(fig, out_dir / "lengths.png")


def _outcomes(corpora: Sequence[dict[str, Any]], out_dir: Path) -> Path:
    names = sorted({o for c in corpora for o in c["metrics"]["outcomes"]})
    values = [[(c["metrics"]["outcomes"].get(o) or {}).get("share") or 0 for o in names] for c in corpora]
    return _grouped_bars(corpora, names, values, out_dir / "outcomes.png", title="outcomes",
                         ylabel="share of dialogues", figsize=(8, 4))


def _quality(corpora: Sequence[dict[str, Any]], out_dir: Path) -> Path:
    from interplay.report.render import quality_rows

    rows = quality_rows([c["metrics"] for c in corpora])
    values = [[v[k] if v[k] is not None else 0 for _, v in rows] for k in range(len(corpora))]
    return _grouped_bars(corpora, [n for n, _ in rows], values, out_dir / "quality.png",
                         title="diversity and task figures (0..1)", figsize=(12, 4.5), ylim=(0, 1), rotation=35)


def _grouped_bars(corpora: Sequence[dict[str, Any]], names: Sequence[str], values: Sequence[Sequence[float]],
                  path: Path, *, title: str, figsize: tuple[float, float], ylabel: str | None = None,
                  ylim: tuple[float, float] | None = None, rotation: int = 0) -> Path:
    """One group of bars per name, one bar per corpus (values[k][i]: corpus k, name i)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=figsize)
    width = 0.8 / len(corpora)
    for k, c in enumerate(corpora):
        ax.bar([i + k * width for i in range(len(names))], values[k], width=width, label=c["label"])
    ax.set_xticks([i + width * (len(corpora) - 1) / 2 for i in range(len(names))], list(names),
                  rotation=rotation, ha="right" if rotation else "center")
    if ylabel:
        ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)
