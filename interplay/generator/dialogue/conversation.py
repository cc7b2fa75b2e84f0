"""One conversation's state: turns, whose turn it is, how it ended, and what was recommended.

The scheduler drives it; this module decides nothing about timing. The user simulator speaks first and turns
alternate. A conversation ends when the user accepts (marker; under the reference protocol: the turn right after
the target, or with suggest_from: retrieved a fitting item, was suggested), gives up (marker), at max_turns, when the next
prompt would not fit the context (context_limit), when a reply is unusable (bad_reply) or when the request
failed (error).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

from interplay.common.roles import PROTOCOL_ACCEPT_NOTE
from interplay.generator.dialogue.parsing import ReplyParser
from interplay.generator.dialogue.rendering import PromptCache
from interplay.generator.inputs.catalog import Catalog
from interplay.generator.inputs.seeds import Seed


class Outcome(str, enum.Enum):
    ACCEPTED = "accepted"
    GAVE_UP = "gave_up"
    MAX_TURNS = "max_turns"
    CONTEXT_LIMIT = "context_limit"
    BAD_REPLY = "bad_reply"
    ERROR = "error"


@dataclass(slots=True)
class Turn:
    role: str                 # "user" (simulator) or "recommender"
    text: str                 # clean text, markers stripped
    raw_text: str             # what the model wrote
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    finish_reason: str | None
    item_ids: list[str]       # catalog items named in this turn, in order of mention
    note: str | None = None   # parsing repair or problem
    candidate_item_ids: list[str] = field(default_factory=list)  # recommender turns: the catalog items it was shown


@dataclass(frozen=True, slots=True)
class Completion:
    """What an engine returns for one turn."""
    text: str
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    finish_reason: str | None


def turn_seed(run_seed: int, conversation_id: str, turn_index: int) -> int:
    """Per-request sampling seed: the same conversation regenerated after a crash samples the same tokens."""
    digest = hashlib.blake2b(f"{run_seed}:{conversation_id}:{turn_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF


@dataclass(slots=True)
class Conversation:
    conversation_id: str
    conversation_index: int   # position in the run's deterministic order
    seed: Seed
    turns: list[Turn] = field(default_factory=list)
    outcome: Outcome | None = None
    error: str | None = None
    accepted_item_id: str | None = None
    prompt_caches: dict[str, PromptCache] = field(default_factory=dict)  # by role, while in flight
    # The candidates chosen for the recommender turn being generated: chosen once, before its first render, so a
    # retried render shows the same ones; moved onto that turn when it arrives.
    pending_candidates: list[str] | None = None
    pending_opener: str = ""  # the words the pending reply was started with (part of its turn)
    pending_regex: str | None = None  # what the pending reply must match (structured outputs), if anything
    # Reference protocol: the teacher decided that the pending user turn accepts the latest suggestion (it is the
    # target, or, with suggest_from: retrieved, it fits the target attributes).
    pending_accept: bool = False

    @property
    def next_role(self) -> str:
        return "user" if len(self.turns) % 2 == 0 else "recommender"

    @property
    def is_finished(self) -> bool:
        return self.outcome is not None

    @property
    def history(self) -> list[tuple[str, str]]:
        return [(t.role, t.text) for t in self.turns]

    def finish(self, outcome: Outcome, error: str | None = None) -> None:
        self.outcome, self.error = outcome, error

    @property
    def target_just_suggested(self) -> bool:
        """Did the latest recommender turn name the held-out target?"""
        last = self.turns[-1] if self.turns else None
        target = self.seed.target_item_id
        return last is not None and last.role == "recommender" and target is not None and target in last.item_ids

    def add_reply(self, completion: Completion, parser: ReplyParser, catalog: Catalog, max_turns: int, *,
                  reference: bool = False) -> None:
        """Record the next turn and decide whether the conversation ends. Under the reference protocol the
        acceptance follows the grounding: the user's turn right after the target was suggested (or whatever the
        protocol set pending_accept for) accepts it, and an accept marker anywhere else is ignored."""
        role = self.next_role
        raw = completion.text
        if self.pending_opener:
            raw = self.pending_opener + raw
        parsed = parser.user_reply(raw) if role == "user" else parser.recommender_reply(raw)
        item_ids = catalog.ground(parsed.text) if parsed.text else []
        target_offered = role == "user" and (self.target_just_suggested or self.pending_accept)
        offered = self._latest_suggestion() if target_offered else None
        candidates = (self.pending_candidates or []) if role == "recommender" else []
        self.pending_candidates, self.pending_opener, self.pending_regex = None, "", None
        self.pending_accept = False
        self.turns.append(Turn(role, parsed.text, raw, completion.num_prompt_tokens,
                               completion.num_output_tokens, completion.num_cached_tokens,
                               completion.finish_reason, item_ids, parsed.note, candidates))
        if reference:
            can_accept = target_offered
            if target_offered and not parsed.is_accept:
                self.turns[-1].note = PROTOCOL_ACCEPT_NOTE
            elif parsed.is_accept and not target_offered:
                self.turns[-1].note = "accept marker, but the target was not just suggested: ignored"
        else:
            can_accept = parsed.is_accept and bool(self.recommended_item_ids)
            if parsed.is_accept and not can_accept:
                # Nothing was recommended yet, so there is nothing to accept: keep talking, but say so.
                self.turns[-1].note = "accept marker before any recommendation, ignored"
        if not parsed.text and not (can_accept or parsed.is_quit):
            # An empty turn would reach the other role as an empty message and the corpus as empty content.
            self.finish(Outcome.BAD_REPLY, f"{parsed.note or self.turns[-1].note} (empty {role} turn)")
        elif can_accept:
            self.accepted_item_id = offered if reference else self._accepted_item(item_ids)
            self.finish(Outcome.ACCEPTED)
        elif parsed.is_quit:
            self.finish(Outcome.GAVE_UP)
        elif len(self.turns) >= max_turns:
            self.finish(Outcome.MAX_TURNS)

    def _latest_suggestion(self) -> str | None:
        """What the reference protocol's acceptance takes: the target if the latest recommender turn named it, else
        the one item it named."""
        last = self.turns[-1] if self.turns else None
        if last is None or last.role != "recommender" or not last.item_ids:
            return None
        target = self.seed.target_item_id
        return target if target in last.item_ids else last.item_ids[0]

    def _accepted_item(self, named_now: list[str]) -> str | None:
        recommended = self.recommended_item_ids
        for item_id in named_now:  # the user names the one they pick
            if item_id in recommended:
                return item_id
        for turn in reversed(self.turns):  # else the latest recommendation
            if turn.role == "recommender" and turn.item_ids:
                return turn.item_ids[0]
        return None

    @property
    def recommended_item_ids(self) -> list[str]:
        """Items the recommender named, in order of first mention."""
        seen: dict[str, None] = {}
        for turn in self.turns:
            if turn.role == "recommender":
                seen.update(dict.fromkeys(turn.item_ids))
        return list(seen)

    @property
    def target_rank(self) -> int | None:
        """1-based rank of the held-out target among the recommendations, None if never recommended."""
        target = self.seed.target_item_id
        recommended = self.recommended_item_ids
        return recommended.index(target) + 1 if target is not None and target in recommended else None
