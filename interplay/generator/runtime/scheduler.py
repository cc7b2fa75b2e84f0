"""The asyncio scheduler: keeps up to max_in_flight conversations active, each with its one next request submitted.

There are no waves. Each of max_in_flight workers takes the next conversation from the plan, runs it request by
request (render -> check context -> generate -> apply), hands it to `on_finished` and takes the next. The moment
a request finishes the next one of that conversation is submitted, so the engine always holds every active
conversation's pending request and vLLM's continuous batching batches them per role. Memory is bounded by
max_in_flight conversations, not by corpus size.

How many conversations are in flight at once is up to the admission policy (policy.KvAdmission): max_in_flight,
or fewer when the engine's KV cache, as its clients report it (`kv_cache_tokens`), cannot keep that many
conversations' histories cached between their turns. Workers above the cap wait for room; a cap below
max_in_flight is said once, through `notify`.

What a request is and what its answer does come from a turn policy (policy.py): one turn of the role whose turn
it is for an Interplay run, the whole dialogue in one request for the single-LLM baseline. Both run through this
one loop, with the same stats, stop() and failure handling.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from interplay.generator.dialogue.conversation import (
    Completion,
    Conversation,
    Outcome,
    turn_seed,
)
from interplay.generator.dialogue.rendering import PromptCache
from interplay.generator.runtime.policy import KvAdmission, Request, TurnPolicy

_log = logging.getLogger(__name__)


class EngineDead(RuntimeError):
    """The engine itself is gone: no further request can succeed, so the run stops (and can be resumed)."""


class RoleClient(Protocol):
    role: str
    max_model_len: int  # tokens, prompt + output
    max_tokens: int     # output tokens of one turn
    # Optional: `kv_cache_tokens`, the size of its engine's KV cache in tokens (vLLM reports it at start).

    def render(self, messages: list[dict[str, str]], cache: PromptCache | None = None) -> list[int]: ...

    # `seed`: None sends no seed (sampling_seeds: none). `regex` (only passed when set): the reply must match it,
    # by the engine's structured outputs.
    async def generate(self, request_id: str, prompt_token_ids: list[int], seed: int | None, *,
                       regex: str | None = None) -> Completion: ...


@dataclass
class SchedulerStats:
    num_in_flight: int = 0
    num_finished: int = 0
    num_turns: int = 0  # requests answered: one per turn, or one per dialogue for the single-LLM baseline
    num_output_tokens: int = 0
    max_in_flight_seen: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)


class Scheduler:
    def __init__(self, clients: dict[str, RoleClient], policy: TurnPolicy, *, max_in_flight: int, run_seed: int | None,
                 on_finished: Callable[[Conversation], Awaitable[None] | None],
                 notify: Callable[[str], object] = _log.warning):
        self.clients = clients
        self.policy = policy
        self.max_in_flight = max_in_flight
        self.run_seed = run_seed  # None: requests carry no sampling seed
        self.on_finished = on_finished
        self.notify = notify  # the one line that says max_in_flight is capped
        self.stats = SchedulerStats()
        self.is_stopping = False
        sizes = [n for c in clients.values() if (n := getattr(c, "kv_cache_tokens", None))]
        self.admission = KvAdmission(max_in_flight, min(sizes) if sizes else None,
                                     max_requests=getattr(policy, "max_requests", 1),
                                     max_conversation_tokens=sum(c.max_model_len for c in clients.values()))
        self._waiting: deque[asyncio.Future] = deque()  # workers waiting for room under the cap
        self._is_plan_empty = False  # the plan has no conversation left

    def stop(self) -> None:
        """Start no new conversations; the active ones run to their end."""
        self.is_stopping = True
        self._wake(len(self._waiting))

    async def run(self, plan: Iterator[Conversation]) -> None:
        workers = [asyncio.create_task(self._worker(plan)) for _ in range(self.max_in_flight)]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:  # one worker failed (EngineDead): do not leave the others running
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, plan: Iterator[Conversation]) -> None:
        # The plan is a plain iterator shared by all workers; next() never awaits, so no two workers take the
        # same conversation.
        while await self._room():
            conv = next(plan, None)
            if conv is None:
                self._is_plan_empty = True
                self._wake(len(self._waiting))
                return
            self.stats.num_in_flight += 1
            self.stats.max_in_flight_seen = max(self.stats.max_in_flight_seen, self.stats.num_in_flight)
            self.admission.start(conv.conversation_id)
            try:
                while not conv.is_finished:
                    await self.step(conv)
            finally:
                self.stats.num_in_flight -= 1
                conv.prompt_caches.clear()  # only in-flight conversations hold prompt ids
                before = self.admission.limit
                self.admission.end(conv.conversation_id)
                self._follow(before, 1)
            self.stats.num_finished += 1
            self.stats.by_outcome[conv.outcome.value] = self.stats.by_outcome.get(conv.outcome.value, 0) + 1
            if (waiting := self.on_finished(conv)) is not None:
                await waiting  # the writer's back-pressure: this worker waits, the others go on

    async def _room(self) -> bool:
        """Wait until one more conversation may start under the admission cap; False once none will."""
        while not (self.is_stopping or self._is_plan_empty) and self.stats.num_in_flight >= self.admission.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            await waiter
        return not (self.is_stopping or self._is_plan_empty)

    def _wake(self, n: int) -> None:
        """Let up to `n` waiting workers check for room again."""
        while n > 0 and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a cancelled worker's
                waiter.set_result(None)
                n -= 1

    def _follow(self, before: int, num_freed: int = 0) -> None:
        """Wake a worker for each conversation that may start now: `num_freed` slots freed, and the cap's rise
        from `before`; say the cap once it binds."""
        self._wake(num_freed + max(self.admission.limit - before, 0))
        if num_freed and (note := self.admission.capped_note()) is not None:
            self.notify(note)

    def seed_for(self, conv: Conversation, turn: int) -> int | None:
        return None if self.run_seed is None else turn_seed(self.run_seed, conv.conversation_id, turn)

    async def step(self, conv: Conversation) -> None:
        """Send the conversation's next request and apply its answer."""
        request = self.policy.next_request(conv)
        client = self.clients[request.role]
        prompt = client.render(request.messages, request.cache)
        if len(prompt) + client.max_tokens > client.max_model_len:
            conv.finish(Outcome.CONTEXT_LIMIT, f"{request.prompt_name} of {len(prompt)} tokens + max_tokens "
                                               f"{client.max_tokens} > max_model_len {client.max_model_len}")
            return
        completion = await self._generate(conv, client, request, prompt)
        if completion is not None:
            before = self.admission.limit
            self.admission.add_turn(conv.conversation_id, request.role, request.index, prompt,
                                    completion.num_output_tokens)
            if self.admission.limit != before:
                self._follow(before)
            self.policy.apply(conv, completion)

    async def _generate(self, conv: Conversation, client: RoleClient, request: Request,
                        prompt: list[int]) -> Completion | None:
        """The request's completion, or None when it failed."""
        try:
            constraint = {"regex": request.regex} if request.regex else {}
            completion = await client.generate(f"{conv.conversation_id}@{request.index}", prompt,
                                               self.seed_for(conv, request.index),
                                               **constraint)
        except (EngineDead, asyncio.CancelledError):
            raise
        except Exception as e:  # one failed request ends only its own conversation
            conv.finish(Outcome.ERROR, f"{request.name}: {type(e).__name__}: {e}")
            return None
        self.stats.num_turns += 1
        self.stats.num_output_tokens += completion.num_output_tokens
        return completion
