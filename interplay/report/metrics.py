"""Corpus quality metrics, pure Python: every figure of `interplay report` is computed here.

Definitions (words are lowercase runs of letters and digits, apostrophes kept inside: "don't", "1990s"):

- distinct-n (Li et al., 2016), per role: distinct n-grams / all n-grams over that role's utterances; n-grams do
  not cross utterances. 1.0 = nothing repeats, lower = more repetitive.
- self-BLEU (Zhu et al., 2018), per role, on a fixed-seed sample of utterances: the mean over the sample of the
  sentence BLEU-4 of each utterance against all the others as references (uniform weights, brevity penalty
  against the closest reference length, and a zero n-gram match count replaced by 0.1: Chen & Cherry's
  smoothing 1). Higher = the utterances are more alike.
- turns, and utterance lengths in words per role (mean, median, 90th percentile, max).
- outcomes and the user simulator's success: the share of dialogues whose outcome is `accepted`.
- Recall@k: over the dialogues with a held-out target, the share whose target is among the first k items the
  recommender named (in order of first mention).
- match score: over the accepted items found in the catalog, the share whose attributes match every target
  attribute (at least one common value per attribute, e.g. one of the wanted genres and the wanted decade);
  `mean_attribute_share` gives partial credit (the share of target attributes matched).
- leakage: the share of dialogues with a target in which a user turn names the target's title (grounded, or its
  normalised title of two words or more appears in the text); `before_recommended` counts only the dialogues in
  which the user names it before the recommender ever did, which only a user who knows the target can do.
- repeated recommendations: the share of item mentions in recommender turns that name an item the recommender
  already named earlier in the same dialogue, and the share of dialogues with at least one such repeat.

Rows are dicts with the corpus columns (see interplay.generator.output.records): `turns` (role, text, item_ids,
num_output_tokens), `outcome`, `accepted_item_id`, `recommended_item_ids`, `target_item_id`,
`target_attributes`. `CorpusMetrics` takes them one at a time, so a report streams a corpus shard by shard.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from interplay.common.roles import ROLES

WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
DISTINCT_N = (1, 2, 3)
RECALL_K = (1, 5, 10)
BLEU_EPSILON = 0.1


def words(text: str | None) -> list[str]:
    return [w.replace("’", "'") for w in WORD_RE.findall((text or "").lower())]


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(utterances: Iterable[Sequence[str]], n: int) -> float:
    """Distinct n-grams / all n-grams; 0.0 when there is no n-gram at all."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for tokens in utterances:
        grams = ngrams(tokens, n)
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def sentence_bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], *, max_n: int = 4,
                  epsilon: float = BLEU_EPSILON) -> float:
    """BLEU of one tokenised hypothesis against tokenised references (see the module docstring)."""
    if not hypothesis or not references:
        return 0.0
    max_ref: list[Counter] = []
    for n in range(1, max_n + 1):
        best: Counter = Counter()
        for ref in references:
            best |= Counter(ngrams(ref, n))  # | keeps the maximum count per n-gram
        max_ref.append(best)
    ref_lengths = [len(r) for r in references]
    return _bleu(hypothesis, max_ref, ref_lengths, max_n=max_n, epsilon=epsilon)


def _bleu(hypothesis: Sequence[str], max_ref: Sequence[Mapping[tuple[str, ...], int]], ref_lengths: Iterable[int],
          *, max_n: int, epsilon: float) -> float:
    log_sum = 0.0
    for n in range(1, max_n + 1):
        counts = Counter(ngrams(hypothesis, n))
        matched = sum(min(c, max_ref[n - 1].get(g, 0)) for g, c in counts.items())
        total = max(sum(counts.values()), 1)
        log_sum += math.log((matched or epsilon) / total)
    c = len(hypothesis)
    r = min(ref_lengths, key=lambda length: (abs(length - c), length))
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return brevity * math.exp(log_sum / max_n)


def self_bleu(utterances: Sequence[Sequence[str]], *, max_n: int = 4, epsilon: float = BLEU_EPSILON) -> float:
    """Mean BLEU of each utterance against all the others; empty utterances are left out. Linear in the sample
    size per n-gram: for every n-gram the two largest counts are kept, so "the maximum over the other utterances"
    is one lookup."""
    utts = [list(u) for u in utterances if u]
    if len(utts) < 2:
        return 0.0
    tops: list[dict[tuple[str, ...], tuple[int, int, int]]] = []  # n-gram -> (max, index of max, second max)
    for n in range(1, max_n + 1):
        top: dict[tuple[str, ...], tuple[int, int, int]] = {}
        for i, u in enumerate(utts):
            for g, c in Counter(ngrams(u, n)).items():
                m1, i1, m2 = top.get(g, (0, -1, 0))
                top[g] = (c, i, m1) if c > m1 else (m1, i1, max(m2, c))
        tops.append(top)
    lengths = Counter(len(u) for u in utts)
    total = 0.0
    for i, u in enumerate(utts):
        max_ref = [_OthersMax(top, i) for top in tops]
        others = lengths.copy()
        others[len(u)] -= 1
        total += _bleu(u, max_ref, [length for length, k in others.items() if k > 0], max_n=max_n,
                       epsilon=epsilon)
    return total / len(utts)


class _OthersMax:
    """n-gram -> its largest count in any utterance but `index` (a read-only mapping for _bleu)."""

    def __init__(self, top: dict[tuple[str, ...], tuple[int, int, int]], index: int):
        self.top, self.index = top, index

    def get(self, gram: tuple[str, ...], default: int = 0) -> int:
        m1, i1, m2 = self.top.get(gram, (default, -1, default))
        return m2 if i1 == self.index else m1


def summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, median, 90th percentile (nearest rank) and max; zeros for no values."""
    if not values:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0.0}
    s = sorted(values)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return {"mean": round(sum(s) / len(s), 3), "median": median, "p90": s[max(math.ceil(0.9 * len(s)) - 1, 0)],
            "max": s[-1]}


def attributes_dict(value: Any) -> dict[str, list[str]]:
    """The corpus/catalog attribute column ([{name, values}]) or a plain mapping -> {name: [values]}."""
    if isinstance(value, Mapping):
        return {str(k): [v] if isinstance(v, str) else list(v or []) for k, v in value.items()}
    return {a["name"]: list(a["values"] or []) for a in value or () if a.get("name")}


def attribute_match(item: Mapping[str, Sequence[str]], target: Mapping[str, Sequence[str]]) -> tuple[bool, float]:
    """(every target attribute matched, share of target attributes matched); case-insensitive values."""
    wanted = {name: {v.casefold() for v in values} for name, values in target.items() if values}
    if not wanted:
        return False, 0.0
    have = {name: {v.casefold() for v in values} for name, values in item.items()}
    hits = sum(1 for name, values in wanted.items() if values & have.get(name, set()))
    return hits == len(wanted), hits / len(wanted)


def title_key(title: str) -> str:
    """Normalised main title ("The Matrix (1999)" and "Seven (a.k.a. Se7en)" -> "matrix", "seven")."""
    from interplay.common.titles import normalize

    while (stripped := re.sub(r"\s*\([^()]*\)\s*$", "", title)) != title and stripped:
        title = stripped
    return normalize(title)


def names_title(text: str, key: str) -> bool:
    """Whether `text` contains the normalised title `key` as whole words (keys of two words or more only: one
    word like "heat" or "up" is too often ordinary speech)."""
    from interplay.common.titles import normalize

    return " " in key and f" {key} " in f" {normalize(text)} "


class CorpusMetrics:
    """Accumulates rows (`add`) and returns every figure (`result`) plus the distributions for the plots."""

    def __init__(self, *, items: Mapping[str, tuple[str, dict[str, list[str]]]] | None = None,
                 sample_size: int = 500, seed: int = 0):
        self.items = items  # item_id -> (title, attributes), from the catalog; None: no match score
        self.sample_size = sample_size
        self.rng = random.Random(seed)
        self.num_dialogues = 0
        self.turn_counts: list[int] = []
        self.utterance_words: dict[str, list[int]] = {r: [] for r in ROLES}
        self.output_tokens: dict[str, list[int]] = {r: [] for r in ROLES}
        self.ngram_seen: dict[str, list[set[int]]] = {r: [set() for _ in DISTINCT_N] for r in ROLES}
        self.ngram_total: dict[str, list[int]] = {r: [0 for _ in DISTINCT_N] for r in ROLES}
        self.samples: dict[str, list[list[str]]] = {r: [] for r in ROLES}
        self.num_seen: dict[str, int] = {r: 0 for r in ROLES}
        self.outcomes: Counter = Counter()
        self.num_with_target = 0
        self.recall_hits = {k: 0 for k in RECALL_K}
        self.num_accepted_known = 0
        self.match_all = 0
        self.match_share = 0.0
        self.leaks = 0
        self.leaks_before = 0
        self.rec_mentions = 0
        self.rec_repeats = 0
        self.dialogues_with_repeat = 0

    def add(self, row: Mapping[str, Any]) -> None:
        self.num_dialogues += 1
        turns = row.get("turns") or []
        self.turn_counts.append(len(turns))
        self.outcomes[row.get("outcome")] += 1
        for turn in turns:
            role = turn["role"]
            tokens = words(turn.get("text"))
            self.utterance_words[role].append(len(tokens))
            self.output_tokens[role].append(turn.get("num_output_tokens") or 0)
            for k, n in enumerate(DISTINCT_N):
                grams = ngrams(tokens, n)
                self.ngram_total[role][k] += len(grams)
                self.ngram_seen[role][k].update(hash(g) for g in grams)
            if tokens:  # reservoir sample (algorithm R) for self-BLEU
                self.num_seen[role] += 1
                if len(self.samples[role]) < self.sample_size:
                    self.samples[role].append(tokens)
                elif (j := self.rng.randrange(self.num_seen[role])) < self.sample_size:
                    self.samples[role][j] = tokens
        self._add_targets(row, turns)
        self._add_repeats(turns)

    def _add_targets(self, row: Mapping[str, Any], turns: Sequence[Mapping[str, Any]]) -> None:
        target = row.get("target_item_id")
        accepted = row.get("accepted_item_id")
        if accepted is not None and self.items is not None and accepted in self.items:
            self.num_accepted_known += 1
            full, share = attribute_match(self.items[accepted][1], attributes_dict(row.get("target_attributes")))
            self.match_all += full
            self.match_share += share
        if target is None:
            return
        self.num_with_target += 1
        recommended = list(row.get("recommended_item_ids") or [])
        rank = recommended.index(target) + 1 if target in recommended else None
        for k in RECALL_K:
            self.recall_hits[k] += rank is not None and rank <= k
        key = title_key(self.items[target][0]) if self.items is not None and target in self.items else ""
        recommended_yet = leaked = leaked_before = False
        for turn in turns:
            if turn["role"] == "recommender":
                recommended_yet = recommended_yet or target in (turn.get("item_ids") or ())
            elif target in (turn.get("item_ids") or ()) or (key and names_title(turn.get("text") or "", key)):
                leaked = True
                leaked_before = leaked_before or not recommended_yet
        self.leaks += leaked
        self.leaks_before += leaked_before

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

    def result(self) -> dict[str, Any]:
        n = self.num_dialogues

        def share(count: float, of: int) -> float | None:
            return round(count / of, 4) if of else None

        return {
            "num_dialogues": n,
            "turns": summary(self.turn_counts),
            "utterance_words": {r: summary(v) for r, v in self.utterance_words.items()},
            "output_tokens_per_turn": {r: summary(v) for r, v in self.output_tokens.items()},
            "distinct": {r: {str(m): round(len(self.ngram_seen[r][k]) / t, 4) if (t := self.ngram_total[r][k])
                             else 0.0 for k, m in enumerate(DISTINCT_N)} for r in ROLES},
            "self_bleu": {**{r: round(self_bleu(self.samples[r]), 4) for r in ROLES},
                          "sample_size": {r: len(self.samples[r]) for r in ROLES}},
            "outcomes": {o: {"count": c, "share": share(c, n)} for o, c in self.outcomes.most_common()},
            "accept_rate": share(self.outcomes.get("accepted", 0), n),
            "recall": {**{f"@{k}": share(self.recall_hits[k], self.num_with_target) for k in RECALL_K},
                       "num_with_target": self.num_with_target},
            "match_score": None if self.items is None else {
                "all_attributes": share(self.match_all, self.num_accepted_known),
                "mean_attribute_share": share(self.match_share, self.num_accepted_known),
                "num_accepted_in_catalog": self.num_accepted_known},
            "leakage": {"user_names_target": share(self.leaks, self.num_with_target),
                        "before_recommended": share(self.leaks_before, self.num_with_target),
                        "num_with_target": self.num_with_target},
            "repeated_recommendations": {"share_of_mentions": share(self.rec_repeats, self.rec_mentions),
                                         "dialogues_with_repeat": share(self.dialogues_with_repeat, n),
                                         "num_mentions": self.rec_mentions},
        }

    def distributions(self) -> dict[str, Any]:
        """Raw values for the plots."""
        return {"turns": self.turn_counts, "utterance_words": self.utterance_words, "outcomes": dict(self.outcomes)}


def corpus_metrics(rows: Iterable[Mapping[str, Any]], **kwargs: Any) -> dict[str, Any]:
    metrics = CorpusMetrics(**kwargs)
    for row in rows:
        metrics.add(row)
    return metrics.result()
