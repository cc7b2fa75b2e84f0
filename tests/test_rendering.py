"""Tests for interplay.generator.dialogue.rendering: incremental prompt tokenisation gives, turn after turn, exactly the ids
of a full encode, with the tiny tokenizer built here (always) and SmolLM2's (when `interplay prepare` has run);
and a tokenizer for which the split does not hold is detected and encoded in full."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from interplay.generator.dialogue.rendering import PromptCache, PromptRenderer

PIECES = ["héllo", "wörld", "映画", "café", "Heat (1995)", "the", "\n", "  ", "\t", "<|im_end|>", "<|im_start|>",
          "end.", "'", '"', "1999", "[ACCEPT]", "🎬", ""]


def conversations(n: int, turns: int, seed: int = 0):
    """Message lists as a role sees them turn after turn: a system prompt, then alternating messages with
    arbitrary text (unicode, whitespace runs, special-token strings inside content)."""
    rng = random.Random(seed)
    for _ in range(n):
        messages = [{"role": "system", "content": "You like " + rng.choice(PIECES)}]
        history = []
        for t in range(turns):
            messages.append({"role": ("user", "assistant")[t % 2],
                             "content": " ".join(rng.choice(PIECES) for _ in range(rng.randint(0, 25)))})
            history.append(list(messages))
        yield history


def test_incremental_equals_full_encode_every_turn(tokenizer):
    renderer = PromptRenderer(tokenizer, num_checked=0)  # no built-in check: this test is the check
    assert renderer.is_incremental
    num_advanced = 0
    for history in conversations(60, 10):
        cache = PromptCache()
        for messages in history:
            assert renderer.render(messages, cache) == renderer.full(messages)
            num_advanced += len(cache.text) > 0
    assert renderer.is_incremental
    assert num_advanced > 500  # the cache really was used, not bypassed


def test_a_started_reply_is_continued_and_still_spliced(tokenizer):
    """A prompt that ends with an unfinished assistant message (a reply opener) leaves it open for the model, and
    the incremental path still equals a full encode, turn after turn."""
    renderer = PromptRenderer(tokenizer, num_checked=0)
    cache = PromptCache()
    messages = [{"role": "system", "content": "s"}]
    for t in range(6):
        messages.append({"role": "user", "content": f"I want something {t}."})
        started = messages + [{"role": "assistant", "content": "How about"}]
        ids = renderer.render(started, cache)
        assert ids == renderer.full(started)
        text = tokenizer.decode(ids)
        assert text.endswith("<|im_start|>assistant\nHow about")
        messages.append({"role": "assistant", "content": f"How about Film {t} (1990)?"})
    assert len(cache.text) > 0


def test_cache_holds_a_prefix_cut_before_the_generation_prompt(tokenizer):
    renderer = PromptRenderer(tokenizer)
    cache = PromptCache()
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "Hi there."}]
    ids = renderer.render(messages, cache)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.startswith(cache.text) and text[len(cache.text):] == "<|im_start|>assistant\n"
    tail = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert ids == cache.ids + tail


def test_without_cache_or_when_history_changes_it_encodes_in_full(tokenizer):
    renderer = PromptRenderer(tokenizer)
    cache = PromptCache()
    first = [{"role": "system", "content": "s"}, {"role": "user", "content": "one"}]
    renderer.render(first, cache)
    edited = [{"role": "system", "content": "t"}, {"role": "user", "content": "one"}, {"role": "user", "content": "x"}]
    assert renderer.render(edited, cache) == renderer.full(edited)  # not a continuation: not spliced
    assert renderer.render(edited) == renderer.full(edited)


@dataclass
class _Encoding:
    ids: list[int]
    offsets: list[tuple[int, int]]


class _FirstPieceBackend:
    """Characters, special tokens whole, and the input's first ordinary character marked (+1000), as SentencePiece
    marks the start of a text: the split encode(A + B) == encode(A) + encode(B) does not hold."""
    SPECIAL = {"<|im_start|>": 1, "<|im_end|>": 2}

    def encode(self, text: str, add_special_tokens: bool = False) -> _Encoding:
        ids, offsets, i = [], [], 0
        while i < len(text):
            special = next((s for s in self.SPECIAL if text.startswith(s, i)), None)
            size = len(special) if special else 1
            first = not special and all(t < 3 for t in ids)
            ids.append(self.SPECIAL[special] if special else ord(text[i]) + (1000 if first else 0))
            offsets.append((i, i + size))
            i += size
        return _Encoding(ids, offsets)


class _FirstPieceTokenizer:
    is_fast = True
    all_special_tokens = list(_FirstPieceBackend.SPECIAL)

    def __init__(self):
        self._tokenizer = _FirstPieceBackend()

    def convert_tokens_to_ids(self, token: str) -> int:
        return _FirstPieceBackend.SPECIAL[token]

    def apply_chat_template(self, messages, add_generation_prompt, tokenize, return_dict=False,
                            continue_final_message=False):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        text += "<|im_start|>assistant\n" if add_generation_prompt else ""
        return self._tokenizer.encode(text).ids if tokenize else text


def test_a_tokenizer_the_split_does_not_hold_for_is_caught_and_encoded_in_full(caplog):
    renderer = PromptRenderer(_FirstPieceTokenizer(), num_checked=4)
    cache = PromptCache()
    messages = [{"role": "system", "content": "s"}]
    with caplog.at_level(logging.WARNING, logger="interplay.generator.dialogue.rendering"):
        for t in range(6):
            messages.append({"role": ("user", "assistant")[t % 2], "content": f"turn {t}"})
            assert renderer.render(messages, cache) == renderer.full(messages)
    assert not renderer.is_incremental
    assert sum("disagrees with a full encode" in r.message for r in caplog.records) == 1


def test_the_splice_is_checked_at_1024_in_flight(caplog):
    """With 1024 conversations in flight the first 1024 renders are first turns, where nothing is spliced: the
    check must still reach the spliced renders that follow, catch the tokenizer and encode in full from then on."""
    renderer = PromptRenderer(_FirstPieceTokenizer())  # the default number of checked renders (256 < 1024)
    histories = [[{"role": "system", "content": f"s{k}"}] for k in range(1024)]
    caches = [PromptCache() for _ in histories]
    with caplog.at_level(logging.WARNING, logger="interplay.generator.dialogue.rendering"):
        for turn in range(3):  # turn after turn, every conversation renders once, as the scheduler interleaves them
            for messages, cache in zip(histories, caches):
                messages.append({"role": ("user", "assistant")[turn % 2], "content": f"turn {turn}"})
                assert renderer.render(messages, cache) == renderer.full(messages)
    assert not renderer.is_incremental
    assert sum("disagrees with a full encode" in r.message for r in caplog.records) == 1
