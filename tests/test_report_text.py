"""The report's text figures: words, distinct-n (Li et al.), self-BLEU against NLTK itself, and the equal-size
utterance samples that corpora are compared on."""

from __future__ import annotations

import random

import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from interplay.report.metrics import CorpusMetrics, compare, corpus_metrics
from interplay.report.text import UtteranceSample, distinct_n, sample_key, self_bleu, words


def texygen_self_bleu(utts: list[list[str]]) -> float:
    """Self-BLEU as Texygen computes it: NLTK BLEU-4 of each utterance against all the others, smoothing 1."""
    utts = [u for u in utts if u]
    return sum(sentence_bleu(utts[:i] + utts[i + 1:], u, smoothing_function=SmoothingFunction().method1)
               for i, u in enumerate(utts)) / len(utts)


def test_words_and_distinct_n() -> None:
    assert words("Don't panic: it's 1990s-style, OK?") == ["don't", "panic", "it's", "1990s", "style", "ok"]
    assert distinct_n([["a", "b", "a", "b"]], 1) == 0.5
    assert distinct_n([["a", "b", "a", "b"]], 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert distinct_n([["a", "b"], ["b", "a"]], 2) == 1.0                  # n-grams never cross utterances
    assert distinct_n([["a"]], 2) == 0.0


def test_self_bleu_by_hand_and_against_nltk() -> None:
    a, b = "a b c d".split(), "a b c e".split()
    # p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0 -> 0.1 (smoothing 1); equal lengths: no brevity penalty.
    assert self_bleu([a, b]) == pytest.approx((0.75 * (2 / 3) * 0.5 * 0.1) ** 0.25)
    # Two identical 2-word utterances: unigrams and the bigram match, no 3- or 4-grams (0.1 each).
    assert self_bleu([["x", "y"], ["x", "y"]]) == pytest.approx((1 * 1 * 0.1 * 0.1) ** 0.25)
    assert self_bleu([["x"], ["y"]]) == 0.0  # NLTK: no unigram in common, BLEU 0 whatever the smoothing
    assert self_bleu([["x"]]) == 0.0
    known = ["a a b".split(), "a a c".split(), ["a", "d"], "a b c d e".split(), [],
             "the film was a quiet crime story".split(), "a quiet crime film from the nineties".split()]
    assert self_bleu(known) == pytest.approx(texygen_self_bleu(known), abs=1e-12)


def test_self_bleu_equals_the_full_nltk_loop_on_random_corpora() -> None:
    # The pruned reference sets must not change a single score: small vocabularies make many ties and repeats.
    rng = random.Random(5)
    for _ in range(20):
        vocab = "a b c d e f".split()[:rng.randint(2, 6)]
        utts = [[rng.choice(vocab) for _ in range(rng.randint(1, 9))] for _ in range(rng.randint(2, 20))]
        assert self_bleu(utts) == pytest.approx(texygen_self_bleu(utts), abs=1e-12)


def test_utterance_sample_is_nested_and_order_free() -> None:
    entries = [(sample_key(0, f"c{i}", 1), [f"w{i}"]) for i in range(40)]
    small, large, shuffled = UtteranceSample(5), UtteranceSample(20), UtteranceSample(20)
    for key, tokens in entries:
        small.offer(key, tokens)
        large.offer(key, tokens)
    for key, tokens in random.Random(1).sample(entries, len(entries)):
        shuffled.offer(key, tokens)
    assert small.num_offered == 40 and small.size == 5 and large.size == 20
    assert small.first(5) == large.first(5) == shuffled.first(5)  # the same 5, whatever else was read
    assert large.first(20) == shuffled.first(20)
    assert sample_key(0, "c1", 1) != sample_key(1, "c1", 1)


def _rows(texts: list[str]) -> list[dict]:
    return [{"conversation_id": f"c{i}", "outcome": "max_turns",
             "turns": [{"role": "user", "text": t, "item_ids": []},
                       {"role": "recommender", "text": f"reply {i} here", "item_ids": []}]}
            for i, t in enumerate(texts)]


def test_corpora_are_compared_on_equal_size_samples() -> None:
    big, small = CorpusMetrics(), CorpusMetrics()
    for row in _rows(["a b"] * 10):  # ten identical user turns: distinct-2 = 1/10 over all of them
        big.add(row)
    for row in _rows(["c d", "e f", "g h", "i j"]):
        small.add(row)
    alone = big.result()
    assert alone["distinct"]["user"]["2"] == 0.1 and alone["distinct"]["num_utterances"]["user"] == 10
    big_result, small_result = compare([big, small])
    assert big_result["distinct"]["num_utterances"] == {"user": 4, "recommender": 4}
    assert big_result["distinct"]["user"]["2"] == 0.25  # 1 distinct bigram among the 4 sampled
    assert big_result["distinct_all_utterances"]["user"]["2"] == 0.1  # the old figure, kept apart
    assert small_result["distinct"]["user"]["2"] == 1.0
    assert big_result["self_bleu"]["sample_size"] == {"user": 4, "recommender": 4}
    assert big_result["self_bleu"]["user"] == round((1 * 1 * 0.1 * 0.1) ** 0.25, 4)


def test_samples_are_bounded_and_deterministic() -> None:
    rows = _rows([f"line number {i} of many" for i in range(50)])
    first = corpus_metrics(rows, sample_size=10, distinct_sample=20, seed=3)
    assert first["self_bleu"]["sample_size"] == {"user": 10, "recommender": 10}
    assert first["distinct"]["num_utterances"] == {"user": 20, "recommender": 20}
    assert first == corpus_metrics(list(reversed(rows)), sample_size=10, distinct_sample=20, seed=3)
    picked = {}
    for seed in (3, 4):
        metrics = CorpusMetrics(distinct_sample=20, seed=seed)
        for row in rows:
            metrics.add(row)
        picked[seed] = metrics.samples["user"].first(20)
    assert picked[3] != picked[4]  # the seed chooses the sample
