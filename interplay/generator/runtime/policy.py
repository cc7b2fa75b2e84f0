"""Turn policies: what the scheduler sends next for a conversation, and how the answer changes the conversation.

The scheduler (scheduler.py) owns everything both kinds of run share: the workers, the in-flight bound, stop(),
the engine-failure and cancel handling, the stats and `on_finished`. A policy owns what differs:

    InterplayPolicy    two roles take turns: each request is one turn of the role whose turn it is
    SingleLLMPolicy    the baseline (baseline.py): one request writes the whole dialogue, split into its turns

Request ids and sampling seeds derive from `Request.index` in the scheduler, the same way for every policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
    def next_request(self, conv: Conversation) -> Request: ...

    # After it the conversation has its new turn(s), and an outcome when they end it.
    def apply(self, conv: Conversation, completion: Completion) -> None: ...


class InterplayPolicy:
    """The user simulator and the recommender take turns, one request per turn."""

    def __init__(self, messages: Callable[[Conversation, str], list[dict[str, str]]], *, catalog: Catalog,
                 parser: ReplyParser, max_turns: int, reference: bool = False):
        self.messages = messages  # (conversation, role) -> that role's chat messages
        self.catalog, self.parser, self.max_turns = catalog, parser, max_turns
        self.reference = reference  # the reference protocol: acceptance follows the grounding of the target

    def next_request(self, conv: Conversation) -> Request:
        role, turn = conv.next_role, len(conv.turns)
        messages = self.messages(conv, role)  # sets conv.pending_regex when the turn is constrained
        return Request(role, messages, turn, name=f"{role} turn {turn}", prompt_name=f"{role} prompt",
                       regex=conv.pending_regex, cache=conv.prompt_caches.setdefault(role, PromptCache()))

    def apply(self, conv: Conversation, completion: Completion) -> None:
        conv.add_reply(completion, self.parser, self.catalog, self.max_turns, reference=self.reference)


__all__ = ["InterplayPolicy", "Request", "TurnPolicy"]
