"""Chat messages -> prompt token ids with the serving tokenizer's chat template, tokenising only what a turn added.

A role's prompt at its next turn is its prompt now plus two messages, so encoding the whole text every turn makes
tokenisation quadratic in the conversation's length; it was most of the scheduler's own time per turn. Fast
(Rust) tokenizers match added special tokens before the model's pre-tokenizer sees the text, so when B starts
with a special token, encode(A + B) == encode(A) + encode(B). A conversation's PromptCache keeps the text of
its last prompt up to the start of that prompt's last special token (the generation prompt's "<|im_start|>"),
with its ids; the next render encodes only the rest.

The template is still rendered in full each turn (cheap next to encoding), so the result does not depend on how
the template treats earlier messages, only on the cached text being a prefix of the new one. The first spliced
renders of each renderer (those that reuse a cached prefix) are also encoded in full and compared; a mismatch (a
tokenizer for which the split does not hold, e.g. one whose special tokens strip the whitespace before them)
turns the incremental path off for the rest of the run, with one warning. Only spliced renders count towards
the check: with 1024 conversations in flight the first 1024 renders are each conversation's first, which encode
the whole text and so cannot disagree; counting those would leave the splice itself unchecked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

NUM_CHECKED = 256  # spliced renders per renderer compared with a full encode


@dataclass(slots=True)
class PromptCache:
    """One conversation's prompt prefix for one role: text ending just before a special token, and its ids."""
    text: str = ""
    ids: list[int] = field(default_factory=list)


def _template_flags(messages: list[dict[str, str]]) -> dict[str, bool]:
    """A prompt ends with the generation prompt of the next turn, or, when it ends with an unfinished assistant
    message (a reply started for the model), with that message left open for the model to continue."""
    continues = messages[-1]["role"] == "assistant"
    return {"add_generation_prompt": not continues, "continue_final_message": continues}


class PromptRenderer:
    def __init__(self, tokenizer: Any, *, num_checked: int = NUM_CHECKED):
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "_tokenizer", None)  # the Rust tokenizers.Tokenizer of a fast tokenizer
        self._backend = backend if hasattr(backend, "encode") and getattr(tokenizer, "is_fast", False) else None
        self._specials = tuple(t for t in getattr(tokenizer, "all_special_tokens", ()) if t)
        self._special_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in self._specials}
        self.is_incremental = self._backend is not None and bool(self._specials)
        self.num_checked = num_checked

    def full(self, messages: list[dict[str, str]]) -> list[int]:
        """The reference: the template rendered and encoded in one call, as vLLM's chat entrypoints do."""
        return list(self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False,
                                                       **_template_flags(messages)))

    def render(self, messages: list[dict[str, str]], cache: PromptCache | None = None) -> list[int]:
        if cache is None or not self.is_incremental:
            return self.full(messages)
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, **_template_flags(messages))
        start = len(cache.text) if cache.text and text.startswith(cache.text) else 0
        tail = text[start:]
        encoding = self._backend.encode(tail, add_special_tokens=False)
        base = cache.ids if start else []
        ids = base + encoding.ids
        if start and self.num_checked > 0:  # an unspliced render is a full encode already
            self.num_checked -= 1
            reference = self.full(messages)
            if reference != ids:
                self.is_incremental = False
                log.warning("incremental prompt tokenisation disagrees with a full encode for this tokenizer; "
                            "encoding every prompt in full from now on")
                return reference
        self._advance(cache, text, tail, ids, len(base), encoding.offsets)
        return ids

    def _advance(self, cache: PromptCache, text: str, tail: str, ids: list[int], num_base: int,
                 offsets: list[tuple[int, int]]) -> None:
        """Move the cache's cut to the start of the last special token in `tail`, the part of `text` just encoded
        (`offsets` are that encoding's, relative to `tail`)."""
        start = len(text) - len(tail)
        cut, token = max((tail.rfind(t), t) for t in self._specials)
        if cut <= 0:
            return  # no special token past the old cut: the old cut stays valid
        for k in range(len(offsets) - 1, -1, -1):
            if offsets[k][0] == cut:  # the token that starts at the cut: the special token itself, never merged
                if ids[num_base + k] == self._special_ids[token]:
                    cache.text, cache.ids = text[:start + cut], ids[:num_base + k]
                return
