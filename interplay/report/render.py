"""The report as Markdown: one column per corpus, so two corpora read side by side (pure Python). Four tables: every
figure, the decision figures, the teacher-quality figures, the duplicates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interplay.common.roles import ROLES
from interplay.report.duplicates import NEAR_THRESHOLD, NUM_PERM
from interplay.report.teacher import FIGURES as TEACHER_FIGURES

# Where the Wilson interval of a row of `quality_rows` is, shown beside its value in the tables (not in the plot).
INTERVALS = {"success rate": ("success_rate_ci95",), "match score": ("match_score", "all_attributes_ci95")}
TEACHER_NAMES = {
    "one_item_turns": "recommender turns offering one item",
    "rejects_before_accept": "dialogues with a rejection",
    "rejections_with_reason": "rejections naming a target reason",
    "written_acceptances": "acceptances the user wrote itself",
    "repeated_user_turns": "user turns repeating an earlier one",
    "openings_naming_attributes": "openings naming a target attribute",
}


def _get(metrics: dict[str, Any], *path: str) -> Any:
    node: Any = metrics
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def quality_rows(metrics: Sequence[dict[str, Any]]) -> list[tuple[str, list[float | None]]]:
    """The figures between 0 and 1, one value per corpus (None where a corpus lacks it): the headline first."""
    paths: list[tuple[str, tuple[str, ...]]] = [
        ("success rate", ("success_rate",)),
        ("match score", ("match_score", "all_attributes")),
        ("chance match", ("match_score", "chance_match")),
        *[(f"Recall@{k} (last list)", ("recall", f"@{k}")) for k in (1, 5, 10)],
        ("leakage (user names target first)", ("leakage", "before_recommender")),
        ("grounded turn share", ("grounded_turn_share",)),
    ]
    for role in ROLES:
        paths += [(f"{role} distinct-{n}", ("distinct", role, str(n))) for n in (1, 2, 3)]
        paths.append((f"{role} self-BLEU", ("self_bleu", role)))
    paths += [*[(f"Recall@{k} per turn", ("recall_per_turn", f"@{k}")) for k in (1, 10)],
              *[(f"dialogue recall@{k} (any mention)", ("dialogue_recall", f"@{k}")) for k in (1, 10)],
              ("user names target at all", ("leakage", "user_names_target")),
              ("repeated recommendations", ("repeated_recommendations", "share_of_mentions"))]
    return [(name, [_get(m, *path) for m in metrics]) for name, path in paths]


def protocol(metrics: dict[str, Any]) -> str:
    """One corpus's protocol: the one value its rows record, `unrecorded` for rows older than the column."""
    counts = metrics.get("protocol") or {}
    if len(counts) == 1:
        return next(iter(counts))
    return "mixed: " + ", ".join(f"{p} {n}" for p, n in counts.items())


def candidates_note(metrics: dict[str, Any]) -> str:
    """'no' or how much of the corpus the recommender made with catalog candidates in its prompt."""
    c = metrics.get("candidates") or {}
    if not c.get("num_turns_with_candidates"):
        return "no"
    inside = c.get("target_in_candidates")
    return (f"yes: {c['dialogues_with_candidates']:.0%} of dialogues, {c['mean_per_list']:g} per list"
            + (f", target among them in {inside:.0%}" if inside is not None else ""))


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _with_interval(value: Any, interval: Sequence[float] | None) -> str:
    """"0.600 [0.231, 0.882]": a share and its 95% interval."""
    return _fmt(value) + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def decision_rows(metrics: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(row name, one cell per corpus) for the decision figures; n/a without a catalog."""
    ds = [m.get("decisions") or {} for m in metrics]
    return [
        ("decision precision (acceptances that fit)",
         [_with_interval(d.get("decision_precision"), d.get("decision_precision_ci95")) for d in ds]),
        ("decision recall (fitting offers accepted)", [_fmt(d.get("decision_recall")) for d in ds]),
        ("offers that fit", [_fmt(d.get("offers_that_fit")) for d in ds]),
        ("acceptances / offers / fitting offers",
         [f"{d['num_acceptances']} / {d['num_offers']} / {d['num_fitting_offers']}" if d else "n/a" for d in ds]),
    ]


def _share_cell(figure: dict[str, Any] | None) -> str:
    """"0.400 (2 of 5)": a share and what it is a share of."""
    if not figure:  # a report.json made before the figure existed
        return "n/a"
    return f"{_fmt(figure['share'])} ({figure['count']} of {figure['denominator']})"


def teacher_rows(metrics: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(row name, one cell per corpus) for the teacher-quality figures: the share and what it is a share of."""
    return [(TEACHER_NAMES[f], [_share_cell(_get(m, "teacher_quality", f)) for m in metrics])
            for f in TEACHER_FIGURES]


def duplicate_rows(metrics: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(row name, one cell per corpus) for the duplicate figures; the near-duplicate row names its threshold."""
    near = next((n for m in metrics if (n := _get(m, "duplicates", "near_whole_text"))),
                {"threshold": NEAR_THRESHOLD, "num_perm": NUM_PERM})
    near_name = (f"near-duplicate dialogues (MinHash LSH, Jaccard >= {near['threshold']:g}, {near['num_perm']} "
                 "permutations, sample)")
    return [
        ("openings duplicating another's (exact)", [_share_cell(_get(m, "duplicates", "openings")) for m in metrics]),
        ("dialogues duplicating another's (exact whole text)",
         [_share_cell(_get(m, "duplicates", "whole_text")) for m in metrics]),
        (near_name, [_share_cell(_get(m, "duplicates", "near_whole_text")) for m in metrics]),
    ]


def table(corpora: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(row name, one cell per corpus) for every figure of the report but the decision and teacher figures."""
    ms = [c["metrics"] for c in corpora]
    def spread(s: dict[str, float]) -> str:
        return f"{s['mean']:.1f} / {s['median']:g} / {s['p90']:g}"

    rows: list[tuple[str, list[str]]] = [
        ("mode", [c.get("mode") or "n/a" for c in corpora]),
        ("protocol", [protocol(m) for m in ms]),
        ("recommender saw catalog candidates", [candidates_note(m) for m in ms]),
        ("dialogues", [_fmt(m["num_dialogues"]) for m in ms]),
        ("turns: mean / median / p90", [spread(m["turns"]) for m in ms]),
    ]
    for role in ROLES:
        rows.append((f"{role} words per utterance: mean / median / p90",
                     [spread(m["utterance_words"][role]) for m in ms]))
    for name, values in quality_rows(ms):
        intervals = [_get(m, *INTERVALS[name]) if name in INTERVALS else None for m in ms]
        rows.append((name, [_with_interval(v, i) for v, i in zip(values, intervals)]))
    outcomes = sorted({o for m in ms for o in m["outcomes"]})
    for o in outcomes:
        rows.append((f"outcome {o}", [f"{c['count']} ({c['share']:.1%})" if (c := m["outcomes"].get(o)) else "0"
                                      for m in ms]))
    rows += [
        ("turns to acceptance: mean / median / p90", [spread(m["turns_to_accept"]) if m["turns_to_accept"]
                                                      ["num_accepted"] else "n/a" for m in ms]),
        ("match score, partial (mean attribute share)", [_fmt(_get(m, "match_score", "mean_attribute_share"))
                                                          for m in ms]),
        ("dialogues scored for match (accepted, in catalog)", [_fmt(_get(m, "match_score", "num_scored"))
                                                                for m in ms]),
        ("chance match over all dialogues", [_fmt(_get(m, "match_score", "chance_match_all_dialogues"))
                                             for m in ms]),
        ("dialogues with a held-out target", [_fmt(m["recall"]["num_with_target"]) for m in ms]),
        ("dialogues with a repeated recommendation", [_fmt(m["repeated_recommendations"]["dialogues_with_repeat"])
                                                      for m in ms]),
        ("distinct-n sample, utterances (user / recommender)",
         [f"{m['distinct']['num_utterances']['user']} / {m['distinct']['num_utterances']['recommender']}"
          for m in ms]),
        ("self-BLEU sample (user / recommender)",
         [f"{m['self_bleu']['sample_size']['user']} / {m['self_bleu']['sample_size']['recommender']}" for m in ms]),
        *[(f"{role} distinct-2 over all utterances (sizes differ)",
           [_fmt(m["distinct_all_utterances"][role]["2"]) for m in ms]) for role in ROLES],
    ]
    return rows


def sections(corpora: Sequence[dict[str, Any]]) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """The report's tables: (heading, rows), the first with no heading."""
    ms = [c["metrics"] for c in corpora]
    return [("", table(corpora)), ("Decisions", decision_rows(ms)), ("Teacher quality", teacher_rows(ms)),
            ("Duplicates", duplicate_rows(ms))]


def markdown(corpora: Sequence[dict[str, Any]], plots: Sequence[str] = ()) -> str:
    labels = [c["label"] for c in corpora]
    lines = ["# Corpus quality report", ""]
    for c in corpora:
        lines.append(f"- **{c['label']}**: `{c['path']}` ({c.get('mode') or 'n/a'})")
    for heading, rows in sections(corpora):
        lines += [""] + ([f"## {heading}", ""] if heading else [])
        lines += ["| figure | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    if plots:
        lines += ["", *[f"![{p}]({p})" for p in plots]]
    notes = [f"- **{c['label']}**: the recommender saw catalog candidates ({candidates_note(c['metrics'])}), so "
             "its Recall, grounded turn share and match score are not those of a recommender on its own."
             for c in corpora if candidates_note(c["metrics"]) != "no"]
    if notes:
        lines += ["", *notes]
    lines += ["", "Definitions and sources: docs/report.md. distinct-n and self-BLEU are measured on samples of the "
              "same number of utterances in every corpus of this report, near duplicates on samples of the same "
              "number of dialogues. Duplicates compare text casefolded, whitespace collapsed, trailing punctuation "
              "removed.", ""]
    return "\n".join(lines)


def text_table(corpora: Sequence[dict[str, Any]]) -> str:
    """The same tables for a terminal: aligned columns, one block per table under its heading's name."""
    labels = [c["label"] for c in corpora]
    blocks = []
    for heading, rows in sections(corpora):
        rows = [((heading or "figure").lower(), labels), *rows]
        width = max(len(name) for name, _ in rows)
        cols = [max(len(cells[k]) for _, cells in rows) for k in range(len(corpora))]
        blocks.append("\n".join(name.ljust(width) + "  " + "  ".join(cell.rjust(w) for cell, w in zip(cells, cols))
                                for name, cells in rows))
    return "\n\n".join(blocks)
