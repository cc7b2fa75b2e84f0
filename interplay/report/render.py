"""The report as Markdown: one column per corpus, so two corpora read side by side (pure Python)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interplay.common.roles import ROLES


def _get(metrics: dict[str, Any], *path: str) -> Any:
    node: Any = metrics
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def quality_rows(metrics: Sequence[dict[str, Any]]) -> list[tuple[str, list[float | None]]]:
    """The figures between 0 and 1, one value per corpus (None where a corpus lacks it)."""
    paths: list[tuple[str, tuple[str, ...]]] = []
    for role in ROLES:
        paths += [(f"{role} distinct-{n}", ("distinct", role, str(n))) for n in (1, 2, 3)]
        paths.append((f"{role} self-BLEU", ("self_bleu", role)))
    paths += [("accept rate", ("accept_rate",)),
              *[(f"Recall@{k}", ("recall", f"@{k}")) for k in (1, 5, 10)],
              ("match score", ("match_score", "all_attributes")),
              ("target leakage (user)", ("leakage", "user_names_target")),
              ("leakage before recommended", ("leakage", "before_recommended")),
              ("repeated recommendations", ("repeated_recommendations", "share_of_mentions"))]
    return [(name, [_get(m, *path) for m in metrics]) for name, path in paths]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table(corpora: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(row name, one cell per corpus) for every figure of the report."""
    ms = [c["metrics"] for c in corpora]
    def spread(s: dict[str, float]) -> str:
        return f"{s['mean']:.1f} / {s['median']:g} / {s['p90']:g}"

    rows: list[tuple[str, list[str]]] = [
        ("mode", [c.get("mode") or "n/a" for c in corpora]),
        ("dialogues", [_fmt(m["num_dialogues"]) for m in ms]),
        ("turns: mean / median / p90", [spread(m["turns"]) for m in ms]),
    ]
    for role in ROLES:
        rows.append((f"{role} words per utterance: mean / median / p90",
                     [spread(m["utterance_words"][role]) for m in ms]))
    for name, values in quality_rows(ms):
        rows.append((name, [_fmt(v) for v in values]))
    outcomes = sorted({o for m in ms for o in m["outcomes"]})
    for o in outcomes:
        rows.append((f"outcome {o}", [f"{c['count']} ({c['share']:.1%})" if (c := m["outcomes"].get(o)) else "0"
                                      for m in ms]))
    rows += [
        ("match score, partial (mean attribute share)", [_fmt(_get(m, "match_score", "mean_attribute_share"))
                                                          for m in ms]),
        ("accepted items in catalog", [_fmt(_get(m, "match_score", "num_accepted_in_catalog")) for m in ms]),
        ("dialogues with a held-out target", [_fmt(m["recall"]["num_with_target"]) for m in ms]),
        ("dialogues with a repeated recommendation", [_fmt(m["repeated_recommendations"]["dialogues_with_repeat"])
                                                      for m in ms]),
        ("self-BLEU sample (user / recommender)",
         [f"{m['self_bleu']['sample_size']['user']} / {m['self_bleu']['sample_size']['recommender']}" for m in ms]),
    ]
    return rows


def markdown(corpora: Sequence[dict[str, Any]], plots: Sequence[str] = ()) -> str:
    labels = [c["label"] for c in corpora]
    lines = ["# Corpus quality report", ""]
    for c in corpora:
        lines.append(f"- **{c['label']}**: `{c['path']}` ({c.get('mode') or 'n/a'})")
    lines += ["", "| figure | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in table(corpora)]
    if plots:
        lines += ["", *[f"![{p}]({p})" for p in plots]]
    lines += ["", "Definitions: `interplay/report/metrics.py` (distinct-n over each role's utterances; self-BLEU-4 "
              "on a fixed-seed sample; Recall@k of the held-out target among the recommendations in order of "
              "first mention; match score: accepted items matching every target attribute; leakage: user turns "
              "naming the target's title).", ""]
    return "\n".join(lines)


def text_table(corpora: Sequence[dict[str, Any]]) -> str:
    """The same table for a terminal: aligned columns."""
    rows = [("figure", [c["label"] for c in corpora])] + table(corpora)
    width = max(len(name) for name, _ in rows)
    cols = [max(len(cells[k]) for _, cells in rows) for k in range(len(corpora))]
    return "\n".join(name.ljust(width) + "  " + "  ".join(cell.rjust(w) for cell, w in zip(cells, cols))
                     for name, cells in rows)
