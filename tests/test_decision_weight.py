"""train.decision_weight: the tokens that carry a turn's decision (its first tokens, the markers) weigh more in the
training loss; every other token, and the held-out loss, stay plain cross-entropy."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from interplay.training.config import PromptSettings  # noqa: E402
from interplay.training.data import Dialogue  # noqa: E402
from interplay.training.examples import (  # noqa: E402
    DECISION_TOKENS,
    IGNORE,
    Example,
    build_example,
    decision_positions,
    end_of_turn_ids,
    loss_spans,
)
from interplay.training.trainer import Collator, weighted_loss  # noqa: E402

TURNS = (("user", "A tense crime movie, please."), ("recommender", "Try Heat (1995), a heist classic."),
         ("user", "Great, Heat it is."))
DIALOGUE = Dialogue("d1", TURNS, "Loves: Heat (1995).", {"genres": ["Crime"]}, ending="accept", target_item="m1")


def test_decision_positions_are_the_first_tokens_and_the_markers() -> None:
    ids = [5, 6, 7, 8, 9, 10, 11, 40, 41, 12]
    assert decision_positions(ids, 2, 10, [[40, 41]]) == [2, 3, 4, 5, 7, 8]  # a marker later in the turn too
    assert decision_positions(ids, 2, 7, [[40, 41]]) == [2, 3, 4, 5]  # no marker: the first tokens only
    assert decision_positions([40, 41, 7, 8, 9, 10], 0, 6, [[40, 41]]) == [0, 1, 2, 3]  # the marker first
    assert decision_positions(ids, 2, 4, []) == [2, 3]  # a turn shorter than DECISION_TOKENS
    assert DECISION_TOKENS == 4


def test_each_turn_of_the_example_marks_its_first_tokens_and_the_accept_marker(tokenizer) -> None:
    example = build_example(tokenizer, "user", DIALOGUE, PromptSettings(), max_seq_len=4096,
                            eos_ids=end_of_turn_ids(tokenizer))
    spans = loss_spans(example)
    marked = set(example.decisions)
    assert marked <= {i for a, b in spans for i in range(a, b)}  # only tokens that carry the loss
    for a, b in spans:
        assert set(range(a, a + DECISION_TOKENS)) <= marked
    first, last = spans[-1][0], spans[-1][1]
    accepting = tokenizer.decode(example.input_ids[first:last])
    assert accepting.startswith("[ACCEPT] Great, Heat it is.")  # the decision first, as the prompt asks
    assert "[ACCEPT]" in tokenizer.decode([example.input_ids[i] for i in sorted(marked) if first <= i < last])
    recommender = build_example(tokenizer, "recommender", DIALOGUE, PromptSettings(), max_seq_len=4096,
                                eos_ids=end_of_turn_ids(tokenizer))
    assert recommender.decisions == tuple(range(loss_spans(recommender)[0][0],
                                                loss_spans(recommender)[0][0] + DECISION_TOKENS))


def test_the_collator_weighs_only_when_asked() -> None:
    batch = [Example("a", [1, 2, 3, 4], [IGNORE, 2, 3, 4], 1, (1, 2)), Example("b", [1, 2], [IGNORE, 2], 1, (1,))]
    assert "loss_weights" not in Collator(0)(batch)
    weights = Collator(0, 4.0)(batch)["loss_weights"]
    assert weights.tolist() == [[1, 4, 4, 1], [1, 4, 1, 1]]


def test_weighted_loss_is_plain_cross_entropy_at_weight_one_and_leans_on_decisions_above() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.tensor([[IGNORE, 3, 4, 5, 1, IGNORE], [IGNORE, IGNORE, 2, 7, 9, 10]])
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1),
                                              ignore_index=IGNORE)
    assert torch.allclose(weighted_loss(logits, labels, torch.ones(2, 6)), plain)
    per_token = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1),
                                                  ignore_index=IGNORE, reduction="none").view(2, 5)
    weights = torch.ones(2, 6)
    weights[0, 1] = 5.0  # the first loss token of row 0 (predicted from position 0)
    want = (per_token.sum() + 4 * per_token[0, 0]) / (8 + 4)
    assert torch.allclose(weighted_loss(logits, labels, weights), want)
