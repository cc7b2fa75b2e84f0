"""Turn policies: what the scheduler sends next for a conversation, and how the answer changes the conversation.

The scheduler (scheduler.py) owns everything both kinds of run share: the workers, the in-flight bound, stop(),
the engine-failure and cancel handling, the stats and `on_finished`. A policy owns what differs:

    InterplayPolicy    two roles take turns: each request is one turn of the role whose turn it is
    SingleLLMPolicy    the baseline (baseline.py): one request writes the whole dialogue, split into its turns

Request ids and sampling seeds derive from `Request.index` in the scheduler, the same way for every policy.

KvAdmission is the scheduler's admission policy: how many conversations may be in flight at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from interplay.generator.dialogue.conversation import Completion, Conversation
from interplay.generator.dialogue.parsing import ReplyParser
from interplay.generator.dialogue.rendering import PromptCache
from interplay.generator.inputs.catalog import Catalog


@dataclass
class Request:
    """One conversation's next request, as a policy asks for it."""
    role: str                             # the client that serves it
    messages: list[dict[str, str]]
    index: int                            # its id is "<conversation_id>@<index>", its seed derives from the index
    name: str                             # opens the error of a failed request: "user turn 3"
    prompt_name: str                      # opens the error of a prompt too long to send: "user prompt"
    regex: str | None = None              # the reply must match it (the engine's structured outputs)
    cache: PromptCache | None = None      # the prefix already rendered, for a conversation that comes back


class TurnPolicy(Protocol):
    # Optional: `max_requests`, the requests one conversation makes at most (1 if absent: the baseline's one).

    def next_request(self, conv: Conversation) -> Request: ...

    # After it the conversation has its new turn(s), and an outcome when they end it.
    def apply(self, conv: Conversation, completion: Completion) -> None: ...


class InterplayPolicy:
    """The user simulator and the recommender take turns, one request per turn."""

    def __init__(self, messages: Callable[[Conversation, str], list[dict[str, str]]], *, catalog: Catalog,
                 parser: ReplyParser, max_turns: int, reference: bool = False):
        self.messages = messages  # (conversation, role) -> that role's chat messages
        self.catalog, self.parser, self.max_turns = catalog, parser, max_turns
        self.max_requests = max_turns
        self.reference = reference  # the reference protocol: acceptance follows the grounding of the target

    def next_request(self, conv: Conversation) -> Request:
        role, turn = conv.next_role, len(conv.turns)
        messages = self.messages(conv, role)  # sets conv.pending_regex when the turn is constrained
        return Request(role, messages, turn, name=f"{role} turn {turn}", prompt_name=f"{role} prompt",
                       regex=conv.pending_regex, cache=conv.prompt_caches.setdefault(role, PromptCache()))

    def apply(self, conv: Conversation, completion: Completion) -> None:
        conv.add_reply(completion, self.parser, self.catalog, self.max_turns, reference=self.reference)


# A request index is measured, for good, once MIN_REACHED of its requests are answered (or as many as the first
# cap lets conversations in, so that a small first cap does not wait for whole conversations to end) and no more
# than a fifth of the conversations that got there still wait for their answer: the first answers at an index are
# the quickest, the shortest replies. An index not measured yet counts as the last one measured, with no
# conversation ending there; the first turns add a whole prompt each, more than the later ones, so an early
# estimate errs high: a lower cap, not evictions.
MIN_REACHED = 32
MIN_FINISHED = 64  # conversations finished before a cap is said: by then it rests on whole conversations


@dataclass(slots=True)
class _Histories:
    index: int = -1  # of the conversation's last answered request
    tokens: dict[str, int] = field(default_factory=dict)  # by role: its last prompt and reply, reused next turn


class KvAdmission:
    """How many conversations may be in flight: at most max_in_flight, and no more than the engine's KV cache can
    keep the histories of.

    Each turn's prompt starts with the previous prompt of its role, which the engine serves from its prefix cache
    while it stays cached. With more conversations in flight than the cache holds, histories are evicted (least
    recently used first) before their next turn and computed again, and prefill takes the time that the larger
    batch saved: above a few dozen sequences a decode step costs about in proportion to its batch
    (docs/benchmarks.md, on a simulated GPU). So the cap is the cache's size over the tokens one conversation's
    histories are expected to reach: for each request index, the mean tokens it added to its conversation's
    histories (the growth of its prompt, and its reply), weighted by the share of conversations that got that far,
    all measured as the run goes. A request still waiting for its answer counts as one that will not end its
    conversation: short replies are answered first and are more often the last ones (a quit, an accept), so
    counting only the answered requests would make conversations look shorter, and the cap higher, early in a
    run. Until the first request is measured, a conversation counts as every role's max_model_len together, the
    most it can ever hold. The prefix that a role's first prompts all share (its system prompt) is cached once
    for all conversations, so it is not counted per conversation.
    """

    def __init__(self, max_in_flight: int, kv_cache_tokens: int | None, *, max_requests: int,
                 max_conversation_tokens: int):
        self.max_in_flight = max_in_flight
        self.kv_cache_tokens = kv_cache_tokens  # None: unknown, no cap below max_in_flight
        self.max_conversation_tokens = max_conversation_tokens
        self._num_reached = [0] * max_requests  # conversations whose request i was answered
        self._num_ended = [0] * max_requests    # ... and that ended with it
        self._num_tokens = [0] * max_requests   # what those requests added to their conversations' histories
        self._num_waiting = [0] * max_requests  # conversations whose request i is on its way, not answered yet
        self._in_flight: dict[str, _Histories] = {}
        self._shared: dict[str, list[int]] = {}  # by role: the prefix its first prompts share so far
        self.num_finished = 0
        self._num_measured = 0  # request indices measured, from the first
        self.limit = self._cap(max_conversation_tokens)  # until measured: every conversation at its largest
        self._min_reached = min(MIN_REACHED, self.limit)
        self.is_capped_noted = False

    def start(self, conversation_id: str) -> None:
        """A conversation starts: its first request is on its way."""
        if self.kv_cache_tokens is not None:
            self._in_flight[conversation_id] = _Histories()
            self._wait(0, 1)

    def add_turn(self, conversation_id: str, role: str, index: int, prompt: Sequence[int], num_output: int) -> None:
        """Request `index` of a conversation, `prompt` in `role`'s turn, was answered with `num_output` tokens."""
        if self.kv_cache_tokens is None:
            return
        held = self._in_flight[conversation_id]
        num_tokens = len(prompt) + num_output  # this role's history, which its next turn reuses
        added = num_tokens - held.tokens[role] if role in held.tokens else num_tokens - self._share(role, prompt)
        held.tokens[role] = num_tokens
        self._wait(held.index + 1, -1)
        held.index = min(index, len(self._num_reached) - 1)
        self._wait(held.index + 1, 1)  # the conversation goes on, unless end() says otherwise
        self._num_reached[held.index] += 1
        self._num_tokens[held.index] += added
        if self._measure():
            self.limit = self._cap(self.conversation_tokens())

    def _wait(self, index: int, n: int) -> None:
        if index < len(self._num_waiting):
            self._num_waiting[index] += n

    def _measure(self) -> bool:
        """Count the next request indices as measured if they now are (see MIN_REACHED); True if any."""
        n, before = self._num_measured, self._num_measured
        while (n < len(self._num_reached) and self._num_reached[n] >= self._min_reached
               and 5 * self._num_waiting[n] <= self._num_reached[n] + self._num_waiting[n]):
            n += 1
        self._num_measured = n
        return n > before

    def _share(self, role: str, prompt: Sequence[int]) -> int:
        """The length of the prefix this first prompt of `role` shares with all the earlier ones."""
        shared = self._shared.get(role)
        if shared is None:  # the first: nothing known to be shared yet
            self._shared[role] = list(prompt)
            return 0
        n = 0
        for a, b in zip(shared, prompt):
            if a != b:
                break
            n += 1
        del shared[n:]
        return n

    def end(self, conversation_id: str) -> None:
        """The conversation is finished; `limit` follows."""
        held = self._in_flight.pop(conversation_id, None)
        if held is None:  # no cap to follow
            return
        self._wait(held.index + 1, -1)
        if held.index < 0:  # no request answered: nothing measured
            return
        self._num_ended[held.index] += 1
        self.num_finished += 1
        self._measure()
        self.limit = self._cap(self.conversation_tokens())

    def conversation_tokens(self) -> int:
        """Tokens one conversation's histories are expected to reach."""
        if not self._num_measured:
            return self.max_conversation_tokens
        expected, alive, per_request = 0.0, 1.0, 0.0
        for i, (reached, ended, tokens, waiting) in enumerate(zip(self._num_reached, self._num_ended,
                                                                  self._num_tokens, self._num_waiting)):
            if i < self._num_measured:
                per_request = tokens / reached
            expected += alive * per_request
            if i < self._num_measured:
                alive *= 1 - ended / (reached + waiting)
        return min(math.ceil(expected), self.max_conversation_tokens)

    def _cap(self, conversation_tokens: int) -> int:
        if self.kv_cache_tokens is None:
            return self.max_in_flight
        return max(1, min(self.max_in_flight, self.kv_cache_tokens // max(conversation_tokens, 1)))

    def capped_note(self) -> str | None:
        """The one line that says max_in_flight is capped, to what and why: once, when the cap binds after
        MIN_FINISHED conversations; None otherwise."""
        if self.is_capped_noted or self.num_finished < MIN_FINISHED or self.limit >= self.max_in_flight:
            return None
        self.is_capped_noted = True
        return (f"max_in_flight {self.max_in_flight} capped at {self.limit} conversations in flight: the engine's "
                f"KV cache holds {self.kv_cache_tokens:,} tokens, and a conversation's histories, kept cached for "
                f"its next turn, reach about {self.conversation_tokens():,} tokens as measured so far; more in flight "
                "would evict each other's histories, to be computed again. The cap follows the measurements.")


__all__ = ["InterplayPolicy", "KvAdmission", "Request", "TurnPolicy"]
