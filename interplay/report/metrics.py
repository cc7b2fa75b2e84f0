"""Every figure of `interplay report` for one corpus, accumulated a row at a time (pure Python).

    metrics = [CorpusMetrics(items=catalog) for _ in corpora]   # then .add(row) for every row of each
    results = compare(metrics)                                  # distinct-n and self-BLEU on equal-size samples

Text figures are in text.py, task figures in task.py, decision figures (with the Wilson intervals) in decisions.py,
teacher-quality figures in teacher.py; docs/report.md defines each figure and gives its source.
Rows are dicts with the corpus columns (interplay.generator.output.records): `conversation_id`, `turns`
(role, text, item_ids, num_output_tokens, and `candidate_item_ids` where the corpus has it), `outcome`,
`accepted_item_id`, `recommended_item_ids`, `target_item_id`, `target_attributes`, and `protocol` where the
corpus has it. Older corpora without the last two columns are read the same way.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from interplay.common.roles import ROLES
from interplay.report.decisions import Decisions, proportion, wilson_interval
from interplay.report.duplicates import NEAR_SAMPLE, Duplicates
from interplay.report.task import (
    ChanceIndex,
    Items,
    attribute_match,
    attributes_dict,
    candidate_lists,
    final_list,
    leakage,
)
from interplay.report.teacher import TeacherQuality
from interplay.report.text import UtteranceSample, distinct_n, ngrams, sample_key, self_bleu, words

DISTINCT_N = (1, 2, 3)
RECALL_K = (1, 5, 10)
UNRECORDED = "unrecorded"  # rows written before the `protocol` column existed (all reference-free)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, median, 90th percentile (nearest rank) and max; zeros for no values."""
    if not values:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0.0}
    s = sorted(values)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return {"mean": round(sum(s) / len(s), 3), "median": median, "p90": s[max(math.ceil(0.9 * len(s)) - 1, 0)],
            "max": s[-1]}


class CorpusMetrics:
    """Accumulates rows (`add`); `result` gives every figure, `distributions` the raw values for the plots."""

    def __init__(self, *, items: Items | None = None, sample_size: int = 500, distinct_sample: int = 10_000,
                 seed: int = 0, near_sample: int = NEAR_SAMPLE):
        self.items = items  # None: no catalog, so no match score, chance level or leakage by title
        self.chance = ChanceIndex(items) if items is not None else None
        self.bleu_sample = sample_size
        self.seed = seed
        self.samples = {r: UtteranceSample(max(distinct_sample, sample_size)) for r in ROLES}
        self.num_dialogues = 0
        self.protocols: Counter = Counter()
        self.outcomes: Counter = Counter()
        self.turn_counts: list[int] = []
        self.turns_to_accept: list[int] = []
        self.utterance_words: dict[str, list[int]] = {r: [] for r in ROLES}
        self.output_tokens: dict[str, list[int]] = {r: [] for r in ROLES}
        self.ngram_seen: dict[str, list[set[int]]] = {r: [set() for _ in DISTINCT_N] for r in ROLES}
        self.ngram_total: dict[str, list[int]] = {r: [0 for _ in DISTINCT_N] for r in ROLES}
        self.num_rec_turns = self.num_grounded_turns = 0
        self.num_candidate_turns = self.num_candidates = self.dialogues_with_candidates = 0
        self.num_with_target = self.target_in_candidates = 0
        self.recall_hits = dict.fromkeys(RECALL_K, 0)            # last recommendation list (iEvaLM)
        self.turn_recall_hits = dict.fromkeys(RECALL_K, 0)       # every recommendation list (per turn)
        self.num_listing_turns = 0
        self.dialogue_recall_hits = dict.fromkeys(RECALL_K, 0)   # first mentions over the whole dialogue
        self.num_scored = self.match_all = 0
        self.match_share = self.chance_sum = 0.0
        self.num_chance_all = 0
        self.chance_sum_all = 0.0
        self.leaks = self.user_names = 0
        self.rec_mentions = self.rec_repeats = self.dialogues_with_repeat = 0
        self.decisions = Decisions(items)
        self.teacher = TeacherQuality(items)
        self.duplicates = Duplicates(seed=seed, near_sample=near_sample)

    def add(self, row: Mapping[str, Any]) -> None:
        conversation = row.get("conversation_id") or f"#{self.num_dialogues}"
        self.num_dialogues += 1
        turns = row.get("turns") or []
        self.protocols[row.get("protocol") or UNRECORDED] += 1
        self.outcomes[row.get("outcome")] += 1
        self.turn_counts.append(len(turns))
        if row.get("outcome") == "accepted":
            self.turns_to_accept.append(len(turns))
        for index, turn in enumerate(turns):
            self._add_text(turn, sample_key(self.seed, conversation, index))
            if turn["role"] == "recommender":
                self.num_rec_turns += 1
                self.num_grounded_turns += bool(turn.get("item_ids"))
        candidates = candidate_lists(turns)
        self.num_candidate_turns += len(candidates)
        self.num_candidates += sum(len(c) for c in candidates)
        self.dialogues_with_candidates += bool(candidates)
        target_attributes = attributes_dict(row.get("target_attributes"))
        self._add_match(row, target_attributes)
        self.decisions.add(row, turns, target_attributes)
        self.teacher.add(row, turns, target_attributes)
        if (target := row.get("target_item_id")) is not None:
            self._add_target(row, turns, target, candidates)
        self._add_repeats(turns)
        self.duplicates.add(conversation, turns)

    def _add_text(self, turn: Mapping[str, Any], key: int) -> None:
        role = turn["role"]
        tokens = words(turn.get("text"))
        self.utterance_words[role].append(len(tokens))
        self.output_tokens[role].append(turn.get("num_output_tokens") or 0)
        for k, n in enumerate(DISTINCT_N):
            grams = ngrams(tokens, n)
            self.ngram_total[role][k] += len(grams)
            self.ngram_seen[role][k].update(hash(g) for g in grams)
        if tokens:
            self.samples[role].offer(key, tokens)

    def _add_match(self, row: Mapping[str, Any], target: Mapping[str, Sequence[str]]) -> None:
        if self.chance is None:
            return
        chance = self.chance.share(target)
        if chance is None:  # the seed wants no attribute: nothing to match, nothing to score
            return
        self.num_chance_all += 1
        self.chance_sum_all += chance
        accepted = row.get("accepted_item_id")
        if accepted is not None and accepted in self.items:
            full, share = attribute_match(self.items[accepted][1], target)
            self.num_scored += 1
            self.match_all += full
            self.match_share += share
            self.chance_sum += chance

    def _add_target(self, row: Mapping[str, Any], turns: Sequence[Mapping[str, Any]], target: str,
                    candidates: list[list[str]]) -> None:
        self.num_with_target += 1
        self.target_in_candidates += any(target in c for c in candidates)
        last = final_list(turns)
        first_mentions = list(row.get("recommended_item_ids") or [])
        for k in RECALL_K:
            self.recall_hits[k] += target in last[:k]
            self.dialogue_recall_hits[k] += target in first_mentions[:k]
        for turn in turns:
            if turn["role"] == "recommender" and (listed := turn.get("item_ids")):
                self.num_listing_turns += 1
                for k in RECALL_K:
                    self.turn_recall_hits[k] += target in list(listed)[:k]
        title = self.items[target][0] if self.items is not None and target in self.items else None
        leaked, named = leakage(turns, target, title)
        self.leaks += leaked
        self.user_names += named

    def _add_repeats(self, turns: Sequence[Mapping[str, Any]]) -> None:
        seen: set[str] = set()
        repeats = 0
        for turn in turns:
            if turn["role"] != "recommender":
                continue
            ids = list(dict.fromkeys(turn.get("item_ids") or ()))
            self.rec_mentions += len(ids)
            repeats += sum(1 for i in ids if i in seen)
            seen.update(ids)
        self.rec_repeats += repeats
        self.dialogues_with_repeat += repeats > 0

    def num_sampled(self, role: str) -> int:
        return self.samples[role].size

    def result(self, sample_sizes: Mapping[str, int] | None = None, near_sample: int | None = None) -> dict[str, Any]:
        """sample_sizes: utterances per role for distinct-n (self-BLEU takes at most `sample_size` of them);
        near_sample: dialogues for the near-duplicate share; `compare` passes the smallest over the corpora
        compared; None: all this corpus's sample."""
        sizes = {r: (sample_sizes or {}).get(r, self.num_sampled(r)) for r in ROLES}
        texts = {r: self.samples[r].first(sizes[r]) for r in ROLES}
        n, with_target = self.num_dialogues, self.num_with_target
        return {
            "num_dialogues": n,
            "protocol": dict(self.protocols.most_common()),
            "candidates": {"dialogues_with_candidates": proportion(self.dialogues_with_candidates, n),
                           "num_turns_with_candidates": self.num_candidate_turns,
                           "mean_per_list": proportion(self.num_candidates, self.num_candidate_turns),
                           "target_in_candidates": proportion(self.target_in_candidates, with_target)},
            "turns": summary(self.turn_counts),
            "turns_to_accept": {**summary(self.turns_to_accept), "num_accepted": len(self.turns_to_accept)},
            "utterance_words": {r: summary(v) for r, v in self.utterance_words.items()},
            "output_tokens_per_turn": {r: summary(v) for r, v in self.output_tokens.items()},
            "distinct": {**{r: {str(m): round(distinct_n(texts[r], m), 4) for m in DISTINCT_N} for r in ROLES},
                         "num_utterances": sizes},
            "distinct_all_utterances": {r: {str(m): proportion(len(self.ngram_seen[r][k]), self.ngram_total[r][k])
                                            or 0.0 for k, m in enumerate(DISTINCT_N)} for r in ROLES},
            "self_bleu": {**{r: round(self_bleu(texts[r][:self.bleu_sample]), 4) for r in ROLES},
                          "sample_size": {r: min(sizes[r], self.bleu_sample) for r in ROLES}},
            "outcomes": {o: {"count": c, "share": proportion(c, n)} for o, c in self.outcomes.most_common()},
            "success_rate": proportion(self.outcomes.get("accepted", 0), n),
            "success_rate_ci95": wilson_interval(self.outcomes.get("accepted", 0), n),
            "recall": {**{f"@{k}": proportion(self.recall_hits[k], with_target) for k in RECALL_K},
                       "num_with_target": with_target},
            "recall_per_turn": {**{f"@{k}": proportion(self.turn_recall_hits[k], self.num_listing_turns)
                                   for k in RECALL_K}, "num_turns": self.num_listing_turns},
            "dialogue_recall": {**{f"@{k}": proportion(self.dialogue_recall_hits[k], with_target) for k in RECALL_K},
                                "num_with_target": with_target},
            "grounded_turn_share": proportion(self.num_grounded_turns, self.num_rec_turns),
            "num_recommender_turns": self.num_rec_turns,
            "match_score": None if self.items is None else {
                "all_attributes": proportion(self.match_all, self.num_scored),
                "all_attributes_ci95": wilson_interval(self.match_all, self.num_scored),
                "mean_attribute_share": proportion(self.match_share, self.num_scored),
                "chance_match": proportion(self.chance_sum, self.num_scored),
                "num_scored": self.num_scored,
                "chance_match_all_dialogues": proportion(self.chance_sum_all, self.num_chance_all)},
            "leakage": {"before_recommender": proportion(self.leaks, with_target),
                        "user_names_target": proportion(self.user_names, with_target),
                        "num_with_target": with_target},
            "repeated_recommendations": {"share_of_mentions": proportion(self.rec_repeats, self.rec_mentions),
                                         "dialogues_with_repeat": proportion(self.dialogues_with_repeat, n),
                                         "num_mentions": self.rec_mentions},
            "decisions": self.decisions.result(),
            "teacher_quality": self.teacher.result(),
            "duplicates": self.duplicates.result(near_sample),
        }

    def distributions(self) -> dict[str, Any]:
        """Raw values for the plots."""
        return {"turns": self.turn_counts, "utterance_words": self.utterance_words, "outcomes": dict(self.outcomes)}


def compare(metrics: Sequence[CorpusMetrics]) -> list[dict[str, Any]]:
    """Each corpus's result, with distinct-n, self-BLEU and the near-duplicate share on samples of one size (per
    role for utterances): the smallest sample of any corpus, so that a corpus of 230 turns and one of 800 are
    measured on as many utterances each."""
    sizes = {r: min(m.num_sampled(r) for m in metrics) for r in ROLES}
    near = min(m.duplicates.num_sampled for m in metrics)
    return [m.result(sizes, near) for m in metrics]


def corpus_metrics(rows: Iterable[Mapping[str, Any]], **kwargs: Any) -> dict[str, Any]:
    metrics = CorpusMetrics(**kwargs)
    for row in rows:
        metrics.add(row)
    return metrics.result()
