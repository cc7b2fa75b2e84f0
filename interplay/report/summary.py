"""The headline figures of a report: one flat dict per corpus, for experiment scripts to print or compare.

    from interplay.report.summary import headline
    figures = headline(json.loads(Path("out/a/report/report.json").read_text()))  # {label: {key: value}}

Every value is a share in [0, 1] or None where the corpus has nothing to measure, except `mean_turns` and the
`_ci95` intervals ([low, high], two shares). docs/report.md defines each one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HEADLINE_KEYS = ("success_rate", "success_rate_ci95", "match_score", "match_score_ci95", "chance_match",
                 "recall_at_1", "recall_at_10", "leakage", "distinct_2_user", "distinct_2_recommender", "mean_turns",
                 "grounded_turn_share", "decision_precision", "decision_recall", "offers_that_fit",
                 "duplicate_openings", "duplicate_dialogues", "near_duplicate_dialogues")


def headline_figures(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The headline keys, in HEADLINE_KEYS order, from one corpus's `metrics` (CorpusMetrics.result)."""
    match = metrics.get("match_score") or {}
    decisions = metrics.get("decisions") or {}
    duplicates = metrics.get("duplicates") or {}  # absent from report.json files made before it

    def share(figure: str) -> float | None:
        return (duplicates.get(figure) or {}).get("share")

    return {
        "success_rate": metrics["success_rate"],
        "success_rate_ci95": metrics.get("success_rate_ci95"),  # absent from report.json files made before it
        "match_score": match.get("all_attributes"),
        "match_score_ci95": match.get("all_attributes_ci95"),
        "chance_match": match.get("chance_match"),
        "recall_at_1": metrics["recall"]["@1"],
        "recall_at_10": metrics["recall"]["@10"],
        "leakage": metrics["leakage"]["before_recommender"],
        "distinct_2_user": metrics["distinct"]["user"]["2"],
        "distinct_2_recommender": metrics["distinct"]["recommender"]["2"],
        "mean_turns": metrics["turns"]["mean"],
        "grounded_turn_share": metrics["grounded_turn_share"],
        "decision_precision": decisions.get("decision_precision"),
        "decision_recall": decisions.get("decision_recall"),
        "offers_that_fit": decisions.get("offers_that_fit"),
        "duplicate_openings": share("openings"),
        "duplicate_dialogues": share("whole_text"),
        "near_duplicate_dialogues": share("near_whole_text"),
    }


def headline(report_json: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{corpus label: headline figures} from a parsed report.json, corpora in report order."""
    return {c["label"]: headline_figures(c["metrics"]) for c in report_json["corpora"]}
