"""A zero-latency fake engine for the orchestration benchmark: every request is answered at once with a canned
reply of realistic length, so what is timed is interplay's own work per turn (rendering the chat template,
tokenising, parsing, grounding, building rows, writing Parquet) and nothing of the model.

Replies: user turns of 3 to 40 words, some ending with the accept or quit marker; recommender turns of 8 to 60
words naming one to three titles from the run's own catalog as "Title (Year)", so grounding works on the real
index. A reply is picked from the per-request seed (or the request id when there is none), so the runs are
deterministic. Token counts of the replies are computed once with the same tokenizer.

Rendering is the engine layer's: the same PromptRenderer (interplay/generator/dialogue/rendering.py) on the same SmolLM2
tokenizer, loaded with transformers rather than through a vLLM engine (tokenizer="smollm2"), or a cheap word-hash
stand-in for tests (tokenizer="simple").
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from benchmarks.gpu_model import GpuModel
from interplay.generator.dialogue.conversation import Completion
from interplay.generator.dialogue.rendering import PromptCache, PromptRenderer

USER_LINES = (
    "Hi.",
    "Something tense tonight, please.",
    "I want something from the nineties with a great cast, maybe a crime story or a dark comedy, nothing too "
    "long and nothing too sad.",
    "Hmm, I have seen that one already. Anything else in the same mood?",
    "Not really my thing. I would rather have something lighter and funnier for a quiet evening at home with "
    "friends who do not like horror at all.",
    "Could you suggest something a bit older, maybe from the seventies or eighties?",
    "I liked the first suggestion but the second one sounds too slow for me tonight.",
    "What about something with a strong female lead and a clever plot?",
    "Okay, tell me more about it.",
    "That one sounds great, I will watch it tonight. {accept}",
    "Perfect, I pick that one, thank you so much for the help! {accept}",
    "Yes, {accept}",
    "Nothing here fits what I want, thanks anyway, goodbye. {quit}",
    "I am in the mood for a drama with a good soundtrack, something that makes me think about it for days "
    "afterwards, but not a war movie please.",
)
RECOMMENDER_LINES = (
    "What kind of movie are you in the mood for tonight?",
    "You might like {0}, a tense film with a great cast.",
    "How about {0} or {1}? Both are fun in very different ways, and neither is too long.",
    "Try {0}.",
    "If you want a classic, {0} is a slow-burning thriller; {1} is a wild ride with sharp dialogue and many "
    "memorable characters, and {2} is a lighter pick if you want to laugh.",
    "{0} is a light comedy that many people love, and it is short enough for a weeknight.",
    "Do you prefer comedies or dramas? And should it be recent or an older film?",
    "Then I would suggest {0}: it has a clever plot, a strong lead and a soundtrack people still talk about. "
    "If that is too heavy, {1} covers similar ground with a lighter touch.",
)


class SimpleTokenizer:
    """Word hashes: three tokens of template per message, one per word (no transformers needed)."""

    def render(self, messages: list[dict[str, str]], cache: PromptCache | None = None) -> list[int]:
        ids: list[int] = []
        for m in messages:
            ids += [1, 2 + len(m["role"]), 3]
            ids += [10 + zlib.crc32(w.encode()) % 30000 for w in m["content"].split()]
        return ids + [1, 4]

    def count(self, text: str) -> int:
        return len(text.split()) + 1


class HFTokenizer:
    """The serving tokenizer behind the engine layer's own PromptRenderer."""

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.renderer = PromptRenderer(self.tokenizer)

    def render(self, messages: list[dict[str, str]], cache: PromptCache | None = None) -> list[int]:
        return self.renderer.render(messages, cache)

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False)) + 1  # + the end-of-turn token


def make_tokenizer(kind: str, model_path: str | None = None) -> SimpleTokenizer | HFTokenizer:
    if kind == "simple":
        return SimpleTokenizer()
    if kind == "smollm2":
        from interplay.prepare import default_model_dir

        return HFTokenizer(model_path or str(default_model_dir()))
    raise ValueError(f"unknown tokenizer {kind!r} (smollm2 or simple)")


def canned_replies(titles: Sequence[str], tokenizer: Any, *, accept: str = "[ACCEPT]", quit: str = "[QUIT]",
                   variants: int = 64, seed: int = 0) -> dict[str, list[tuple[str, int]]]:
    """Per role: (text, output tokens). Recommender replies name titles drawn from `titles`."""
    rng = random.Random(seed)
    user = [line.format(accept=accept, quit=quit) for line in USER_LINES]
    rec = [RECOMMENDER_LINES[k % len(RECOMMENDER_LINES)].format(*(rng.choice(titles) for _ in range(3)))
           for k in range(variants)]
    return {role: [(t, tokenizer.count(t)) for t in texts] for role, texts in (("user", user), ("recommender", rec))}


class ZeroLatencyClient:
    """RoleClient answering at once; one `await asyncio.sleep(0)` per turn lets the other workers run, as an
    engine's await does. It reports the simulated H100's KV cache (gpu_model.py), as vLLM reports its own, so that
    the scheduler's admission cap does its bookkeeping here as on a GPU."""

    def __init__(self, role: str, tokenizer: Any, replies: Sequence[tuple[str, int]], *, max_model_len: int,
                 max_tokens: int, model: str = "zero-latency-fake"):
        self.role, self.tokenizer, self.replies = role, tokenizer, list(replies)
        self.max_model_len, self.max_tokens, self.model = max_model_len, max_tokens, model
        self.kv_cache_tokens = GpuModel().kv_cache_tokens
        self.num_calls = 0

    def render(self, messages: list[dict[str, str]], cache: PromptCache | None = None) -> list[int]:
        return self.tokenizer.render(messages, cache)

    async def generate(self, request_id: str, prompt_token_ids: list[int], seed: int | None, *,
                       regex: str | None = None) -> Completion:
        await asyncio.sleep(0)
        self.num_calls += 1
        key = zlib.crc32(request_id.encode()) if seed is None else seed  # no seed: still one reply per request
        text, num_tokens = self.replies[key % len(self.replies)]
        return Completion(text, len(prompt_token_ids), min(num_tokens, self.max_tokens), 0, "stop")


def zero_latency_open_engines(tokenizer: Any, titles: Sequence[str]) -> Callable[[Any], Any]:
    """`open_engines` for Generation.run: both roles on zero-latency clients built from the run's config."""

    @contextlib.asynccontextmanager
    async def open_engines(config: Any) -> AsyncIterator[dict[str, ZeroLatencyClient]]:
        conv = config.conversation
        replies = canned_replies(titles, tokenizer, accept=conv.accept_marker, quit=conv.quit_marker)
        max_model_len = int(config.engine.get("max_model_len") or 2048)
        open_engines.clients = {  # type: ignore[attr-defined]
            role: ZeroLatencyClient(role, tokenizer, replies[role], max_model_len=max_model_len,
                                    max_tokens=int(config.sampling(role)["max_tokens"]))
            for role in ("user", "recommender")}
        yield open_engines.clients  # type: ignore[attr-defined]

    return open_engines
