"""A fake engine with the real RoleClient interface, for scheduler and run tests without vLLM.

Replies are chosen deterministically from the per-request seed, so a conversation regenerated with the same
turn seeds is identical however the requests were scheduled; a request sent without a seed (sampling_seeds:
none) is keyed by its request id instead, so runs stay deterministic. Latencies vary per request (and can be overridden
per request), and every call is recorded together with the number of requests in flight, so tests can assert
on concurrency, ordering and exactly-once behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from interplay.generator.dialogue.conversation import Completion
from interplay.generator.runtime.scheduler import EngineDead

# Canned replies of varied lengths. User replies sometimes carry a marker; recommender replies name catalog
# titles (see CATALOG_ROWS in conftest) or ask a question.
USER_REPLIES = (
    "Hi.",
    "I want something tense tonight.",
    "Something from the nineties with a great cast, maybe a crime story or a dark comedy, nothing too long.",
    "Hmm, I have seen that one already. Anything else?",
    "Not really my thing, I would rather have something lighter and funnier for a quiet evening at home.",
    "That one sounds great, I will watch it tonight. [ACCEPT]",
    "Perfect, I pick that one! [ACCEPT]",
    "Nothing here fits what I want, thanks anyway, goodbye. [QUIT]",
    "Could you suggest something a bit older?",
    "Okay.",
)
RECOMMENDER_REPLIES = (
    "What kind of movie are you in the mood for?",
    "You might like Heat (1995), a tense crime film with a great cast.",
    "How about Toy Story (1995) or Fargo (1996)? Both are fun in very different ways.",
    "Try The Matrix (1999).",
    "If you want a classic, Alien (1979) is a slow-burning thriller; Pulp Fiction (1994) is a wild ride "
    "with sharp dialogue and many memorable characters.",
    "Groundhog Day (1993) is a light comedy that many people love.",
    "Do you prefer comedies or dramas?",
)
CANNED = {"user": USER_REPLIES, "recommender": RECOMMENDER_REPLIES}

ReplyFn = Callable[[str, int], str]       # (request_id, key) -> reply text; key: the seed, see request_key
DelayFn = Callable[[str, int], float]     # (request_id, key) -> seconds
Predicate = Callable[[str], bool]         # request_id -> bool


def default_delay(request_id: str, seed: int) -> float:
    """0.2 to 2 ms, varying with the seed."""
    return 0.0002 * (1 + seed % 10)


def request_key(request_id: str, seed: int | None) -> int:
    """What picks a reply and a delay: the seed, or the request id when the request carries none."""
    return zlib.crc32(request_id.encode()) if seed is None else seed


def split_request_id(request_id: str) -> tuple[str, int]:
    """The scheduler's request ids are "<conversation_id>@<turn index>"."""
    conversation_id, _, turn = request_id.rpartition("@")
    return conversation_id, int(turn)


@dataclass
class Call:
    role: str
    request_id: str
    conversation_id: str
    turn: int
    prompt_len: int
    seed: int | None
    submitted: float
    finished: float | None = None
    result: str = "pending"   # "ok", "error", "dead", "cancelled"
    text: str | None = None
    regex: str | None = None  # the structured-output constraint the request carried


@dataclass
class EngineLog:
    """Shared by the clients of one fake engine: every call, and what was in flight at once."""
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    pending_by_conversation: dict[str, int] = field(default_factory=dict)
    max_in_flight_conversations: int = 0
    overlaps: list[str] = field(default_factory=list)     # request ids sent while their conversation had one
    oversized: list[str] = field(default_factory=list)    # request ids whose prompt + max_tokens did not fit

    def conversation_ids(self) -> list[str]:
        """Conversations that sent at least one request, in order of their first request."""
        return list(dict.fromkeys(c.conversation_id for c in self.calls))

    def calls_of(self, conversation_id: str) -> list[Call]:
        return [c for c in self.calls if c.conversation_id == conversation_id]

    def max_active_conversations(self) -> int:
        """Most conversations between their first request and the end of their last one, at any time."""
        spans: dict[str, list[float]] = {}
        for c in self.calls:
            end = c.finished if c.finished is not None else float("inf")
            s = spans.setdefault(c.conversation_id, [c.submitted, end])
            s[0], s[1] = min(s[0], c.submitted), max(s[1], end)
        events = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()],
                        key=lambda e: (e[0], e[1]))  # at equal times an end counts before a start
        active = best = 0
        for _, delta in events:
            active += delta
            best = max(best, active)
        return best


class FakeClient:
    """One role's client of the fake engine (implements interplay.generator.runtime.scheduler.RoleClient)."""

    def __init__(self, role: str, *, max_model_len: int = 2048, max_tokens: int = 64,
                 delay: float | DelayFn = default_delay, fail_on: Predicate | None = None,
                 dead_on: Predicate | None = None, replies: Sequence[str] | ReplyFn | None = None,
                 log: EngineLog | None = None, on_submit: Callable[[str], None] | None = None,
                 model: str | None = None, adapter: str | None = None, sampling: dict[str, Any] | None = None):
        self.role = role
        self.max_model_len = max_model_len
        self.max_tokens = max_tokens
        self.delay = delay
        self.fail_on = fail_on
        self.dead_on = dead_on
        self.replies = CANNED[role] if replies is None else replies
        self.log = log if log is not None else EngineLog()
        self.on_submit = on_submit
        self.model = model or f"fake/{role}-model"
        self.adapter = adapter
        self.sampling = sampling if sampling is not None else {"temperature": 0.8, "max_tokens": max_tokens}

    # -- RoleClient -------------------------------------------------------------------------------------------

    def render(self, messages: list[dict[str, str]], cache: Any = None) -> list[int]:
        """Three tokens of chat template per message plus one per whitespace-separated word."""
        ids: list[int] = []
        for m in messages:
            ids += [1, 2 + len(m["role"]), 3]
            ids += [10 + zlib.crc32(w.encode()) % 30000 for w in m["content"].split()]
        return ids

    async def generate(self, request_id: str, prompt_token_ids: list[int], seed: int | None, *,
                       regex: str | None = None) -> Completion:
        log = self.log
        conversation_id, turn = split_request_id(request_id)
        call = Call(self.role, request_id, conversation_id, turn, len(prompt_token_ids), seed, time.perf_counter(),
                    regex=regex)
        log.calls.append(call)
        if len(prompt_token_ids) + self.max_tokens > self.max_model_len:
            log.oversized.append(request_id)
        if log.pending_by_conversation.get(conversation_id, 0):
            log.overlaps.append(request_id)
        log.pending_by_conversation[conversation_id] = log.pending_by_conversation.get(conversation_id, 0) + 1
        log.in_flight += 1
        log.max_in_flight = max(log.max_in_flight, log.in_flight)
        log.max_in_flight_conversations = max(log.max_in_flight_conversations,
                                              sum(1 for n in log.pending_by_conversation.values() if n))
        if self.on_submit is not None:
            self.on_submit(request_id)
        try:
            key = request_key(request_id, seed)
            delay = self.delay(request_id, key) if callable(self.delay) else self.delay
            await asyncio.sleep(delay)
            if self.dead_on is not None and self.dead_on(request_id):
                call.result = "dead"
                raise EngineDead(f"fake {self.role} engine died at {request_id}")
            if self.fail_on is not None and self.fail_on(request_id):
                call.result = "error"
                raise RuntimeError(f"boom at {request_id}")
            text = self.reply(request_id, key)
            call.result, call.text = "ok", text
            return Completion(text, len(prompt_token_ids), len(text.split()) + 1,
                              len(prompt_token_ids) // 2, "stop")
        except asyncio.CancelledError:
            call.result = "cancelled"
            raise
        finally:
            call.finished = time.perf_counter()
            log.in_flight -= 1
            log.pending_by_conversation[conversation_id] -= 1

    # -- helpers ----------------------------------------------------------------------------------------------

    def reply(self, request_id: str, key: int) -> str:
        if callable(self.replies):
            return self.replies(request_id, key)
        return random.Random(key).choice(list(self.replies))


def make_clients(log: EngineLog | None = None, *, user: dict[str, Any] | None = None,
                 recommender: dict[str, Any] | None = None, **common: Any) -> dict[str, FakeClient]:
    """Both roles' clients on one fake engine (one shared EngineLog); `common` goes to both, the role dicts
    to one role only."""
    log = log if log is not None else EngineLog()
    return {role: FakeClient(role, log=log, **{**common, **(extra or {})})
            for role, extra in (("user", user), ("recommender", recommender))}


class fake_open_engines:
    """`open_engines` for Generation.run: an async context manager yielding the given clients.

    Counts how often the engines were opened and closed."""

    def __init__(self, clients: dict[str, FakeClient]):
        self.clients = clients
        self.opened = 0
        self.closed = 0
        self.configs: list[Any] = []

    def __call__(self, config: Any) -> contextlib.AbstractAsyncContextManager[dict[str, FakeClient]]:
        self.configs.append(config)
        return self._open()

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[dict[str, FakeClient]]:
        self.opened += 1
        try:
            yield self.clients
        finally:
            self.closed += 1
