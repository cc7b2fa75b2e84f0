"""The asyncio scheduler: keeps up to max_in_flight conversations active, each with its one next request submitted.

There are no waves. Each of max_in_flight workers takes the next conversation from the plan, runs it request by
request (render -> check context -> generate -> apply), hands it to `on_finished` and takes the next. The moment
a request finishes the next one of that conversation is submitted, so the engine always holds every active
conversation's pending request and vLLM's continuous batching batches them per role. Memory is bounded by
max_in_flight conversations, not by corpus size.

What a request is and what its answer does come from a turn policy (policy.py): one turn of the role whose turn
it is for an Interplay run, the whole dialogue in one request for the single-LLM baseline. Both run through this
one loop, with the same stats, stop() and failure handling.
"""

from __future__ import annotations

import asyncio
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
from interplay.generator.runtime.policy import Request, TurnPolicy


class EngineDead(RuntimeError):
    """The engine itself is gone: no further request can succeed, so the run stops (and can be resumed)."""


class RoleClient(Protocol):
    role: str
    max_model_len: int  # tokens, prompt + output
    max_tokens: int     # output tokens of one turn

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
                 on_finished: Callable[[Conversation], Awaitable[None] | None]):
        self.clients = clients
        self.policy = policy
        self.max_in_flight = max_in_flight
        self.run_seed = run_seed  # None: requests carry no sampling seed
        self.on_finished = on_finished
        self.stats = SchedulerStats()
        self.is_stopping = False

    def stop(self) -> None:
        """Start no new conversations; the active ones run to their end."""
        self.is_stopping = True

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
        while not self.is_stopping:
            conv = next(plan, None)
            if conv is None:
                return
            self.stats.num_in_flight += 1
            self.stats.max_in_flight_seen = max(self.stats.max_in_flight_seen, self.stats.num_in_flight)
            try:
                while not conv.is_finished:
                    await self.step(conv)
            finally:
                self.stats.num_in_flight -= 1
                conv.prompt_caches.clear()  # only in-flight conversations hold prompt ids
            self.stats.num_finished += 1
            self.stats.by_outcome[conv.outcome.value] = self.stats.by_outcome.get(conv.outcome.value, 0) + 1
            if (waiting := self.on_finished(conv)) is not None:
                await waiting  # the writer's back-pressure: this worker waits, the others go on

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
