"""Diversity of a corpus's text: words, distinct-n, self-BLEU, and the equal-size utterance samples they are
computed on (pure Python; BLEU itself is NLTK's).

- words: lowercase runs of letters and digits, apostrophes kept inside ("don't", "1990s").
- distinct-n (Li et al., 2016): distinct n-grams / all n-grams over a set of utterances; n-grams never cross
  utterances. 1.0 = nothing repeats.
- self-BLEU (Zhu et al., 2018, Texygen): the mean over utterances of NLTK's `sentence_bleu` of each utterance
  against all the others as references (BLEU-4, uniform weights, `SmoothingFunction().method1`, as Texygen).
- UtteranceSample: the utterances of one role with the smallest keys, where a key is a fixed hash of (seed,
  conversation, turn). The m smallest of a corpus are a uniform sample of m of its utterances, the same ones
  whatever else is read, so two corpora are compared on samples of the same size m (their smaller count).
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections import Counter
from collections.abc import Iterable, Sequence

WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
BLEU_N = 4


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


def self_bleu(utterances: Sequence[Sequence[str]], *, max_n: int = BLEU_N) -> float:
    """Mean NLTK sentence BLEU of each utterance against all the others; empty utterances are left out.

    Exactly the Texygen loop, but each call gets only the references that decide its score: BLEU reads the
    references through two numbers alone, per hypothesis n-gram the largest count in any one reference, and the
    reference length closest to the hypothesis's. So one reference holding each such maximum, plus one of the
    closest length, give the same score as all N - 1 of them, and the loop is no longer quadratic in N."""
    # Imported here: `interplay export --dedup` reads words() through duplicates.py without the report extra.
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smoothing = SmoothingFunction().method1  # Chen & Cherry's method 1: a zero count becomes epsilon = 0.1
    utts = [list(u) for u in utterances if u]
    if len(utts) < 2:
        return 0.0
    weights = (1 / max_n,) * max_n
    holders = _top_two_holders(utts, max_n)
    by_length: dict[int, list[int]] = {}
    for i, u in enumerate(utts):
        if len(by_length.setdefault(len(u), [])) < 2:
            by_length[len(u)].append(i)
    total = 0.0
    for i, u in enumerate(utts):
        refs = {_closest_length_other(by_length, i, len(u))}
        for n in range(1, max_n + 1):
            for gram in set(ngrams(u, n)):
                c1, i1, c2, i2 = holders[gram]
                if i1 != i:
                    refs.add(i1)
                elif c2 > 0:
                    refs.add(i2)
        total += sentence_bleu([utts[j] for j in sorted(refs)], u, weights=weights, smoothing_function=smoothing)
    return total / len(utts)


def _top_two_holders(utts: Sequence[Sequence[str]], max_n: int) -> dict[tuple[str, ...], tuple[int, int, int, int]]:
    """n-gram -> (largest count in one utterance, its index, second largest, its index); -1: no such one."""
    top: dict[tuple[str, ...], tuple[int, int, int, int]] = {}
    for i, u in enumerate(utts):
        for n in range(1, max_n + 1):
            for gram, c in Counter(ngrams(u, n)).items():
                c1, i1, c2, i2 = top.get(gram, (0, -1, 0, -1))
                top[gram] = (c, i, c1, i1) if c > c1 else (c1, i1, c, i) if c > c2 else (c1, i1, c2, i2)
    return top


def _closest_length_other(by_length: dict[int, list[int]], i: int, length: int) -> int:
    """An utterance other than i whose length NLTK's closest_ref_length would pick (ties: the shorter)."""
    best = min((n for n, idx in by_length.items() if idx != [i]), key=lambda n: (abs(n - length), n))
    return next(j for j in by_length[best] if j != i)


def sample_key(seed: int, conversation: str, turn_index: int) -> int:
    """A fixed 64-bit key per utterance: the same in every process and every Python (unlike hash())."""
    digest = hashlib.blake2b(f"{seed}\x00{conversation}\x00{turn_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class UtteranceSample:
    """The `capacity` utterances with the smallest keys seen so far, and how many were offered in all."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.num_offered = 0
        self._heap: list[tuple[int, list[str]]] = []  # (-key, tokens): the root is the largest key kept

    def offer(self, key: int, tokens: list[str]) -> None:
        self.num_offered += 1
        if len(self._heap) < self.capacity:
            heapq.heappush(self._heap, (-key, tokens))
        elif -self._heap[0][0] > key:
            heapq.heapreplace(self._heap, (-key, tokens))

    @property
    def size(self) -> int:
        return len(self._heap)

    def first(self, m: int) -> list[list[str]]:
        """The m utterances with the smallest keys, in key order."""
        return [tokens for _, tokens in sorted(self._heap, key=lambda e: -e[0])[:m]]
