"""The conversation protocols: what each role is shown before its turn.

    reference_free   the method. The user simulator knows its preference summary and target attributes, never the
                     target; the recommender knows the conversation, plus, with recommender.num_candidates: k, the
                     k catalog items that best match what the user said so far (inputs/retrieval.py).
    reference        the teacher (PEARL's way, on two LLMs). The user simulator is steered towards the target:
                     after each recommender message it reads a note saying whether that was the target (its
                     system prompt may name it too, as {target} in a template of your own); the recommender is
                     shown a shortlist of the target and k-1 distractors (inputs/shortlist.py), less what it
                     already suggested; its replies are started with a plain opener ("How about", ...:
                     recommender.reply_openers). The user's turn right after the target is suggested accepts it
                     (Conversation.add_reply). With recommender.suggest_from: retrieved, the recommender is shown
                     what a reference-free one with k candidates is shown, suggests the first of them, and the
                     user accepts the first suggestion that fits its target attributes; its opening names only
                     part of what it wants, most of the time, so that rejections say the rest.

Candidates are attached to the user message they follow, in the recommender's view only, and stay there: every
prompt is the previous one plus new messages, so the prefix cache keeps serving the history. The notes of the
teacher's user view are never stored: the corpus holds what the two roles said, nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from interplay.common.attributes import fits, missing
from interplay.generator.config import GenerateConfig
from interplay.generator.dialogue import teacher
from interplay.generator.dialogue.conversation import Conversation
from interplay.generator.dialogue.prompts import (
    FITS_NOTE,
    OTHER_SUGGESTED_NOTE,
    REJECT_REASON_NOTE,
    TARGET_SUGGESTED_NOTE,
    candidates_note,
    format_attributes,
    recommender_system_prompt,
    role_messages,
    user_system_prompt,
)
from interplay.generator.inputs.cards import ItemCards
from interplay.generator.inputs.catalog import Catalog
from interplay.generator.inputs.retrieval import CandidateIndex, user_text
from interplay.generator.inputs.shortlist import Shortlist

_REGEX_SPECIAL = set("\\.^$*+?{}[]|()")
# After the item: anything on the same line except brackets (no copied "[catalog: ...]" note).
_REST = r"[^\n\[\]]*"
# The teacher's recommender: the item, then one sentence without capitals, parentheses, pipes or colons, so it
# cannot go on to a second title or copy the next entry of its candidate list ("Heat (1995): Crime | Fargo").
_REST_ONE_ITEM = r"[^\n\[\]()|:;.!?A-Z]{0,60}[.!?]"


def _escape(text: str) -> str:
    return "".join(f"\\{c}" if c in _REGEX_SPECIAL else c for c in text)


def naming_one_of(names: Sequence[str], opener: str = "", *, one_item: bool = False) -> str:
    """A regular expression for a reply that names one of `names`: right away after an opener ("How about" ->
    " Heat (1995)? ..."), else after a short lead-in; with `one_item`, nothing after it can name another item by
    Title (Year). Written for vLLM's structured-output backends, which take plain escapes only."""
    alternatives = "|".join(_escape(n) for n in names)
    lead = " " if opener else r"[^\n\[\]]{0,60}"
    return f"{lead}({alternatives}){_REST_ONE_ITEM if one_item else _REST}"


def display_names(catalog: Catalog, item_ids: Sequence[str]) -> list[str]:
    """"Title (Year)" of each item, as the recommender is shown them."""
    return [catalog.get(i).display for i in item_ids]


def recommender_history(history: Sequence[tuple[str, str]], shown: Sequence[Sequence[str]],
                        *, item: str = "movie") -> list[tuple[str, str]]:
    """The dialogue as the recommender sees it: user message i carries the candidates `shown[i]` (display
    names, or cards) that the recommender saw before answering it. Training renders the same view."""
    view, k = [], 0
    for speaker, text in history:
        if speaker == "user":
            names = shown[k] if k < len(shown) else ()
            text, k = text + candidates_note(names, item=item), k + 1
        view.append((speaker, text))
    return view


def user_history(history: Sequence[tuple[str, str]], cards: ItemCards | None,
                 named: Sequence[Sequence[str]] | None = None,
                 wanted: Mapping[str, Sequence[str]] | None = None) -> list[tuple[str, str]]:
    """The dialogue as a reference-free user simulator sees it: each recommender message followed by the cards
    of the items it names. `named`: the items each recommender turn grounded to (the generator's turns), else
    grounded here from the text, as training does; the same rule gives the same items. `wanted`: the
    simulator's target attributes, which cards made with `fit` compare each item with."""
    if cards is None:
        return list(history)
    view, k = [], 0
    for speaker, text in history:
        if speaker == "recommender":
            ids = named[k] if named is not None else cards.catalog.ground(text)
            text, k = text + cards.note(ids, wanted), k + 1
        view.append((speaker, text))
    return view


class RetrievedCandidates:
    """The candidates a reference-free recommender with `k` of them is shown, recomputed from a dialogue's text
    alone: before each of its turns, the k best matches for the user's words so far, less the items it already
    named. Generation chooses them turn by turn (DialogueProtocol.candidates); training renders the recommender's
    view of a stored dialogue with this, so both see the same lists (as cards, with `cards`)."""

    def __init__(self, catalog: Catalog, k: int, index: CandidateIndex | None = None,
                 cards: ItemCards | None = None):
        self.catalog, self.k, self.cards = catalog, k, cards
        self.index = index or CandidateIndex(catalog)

    def next(self, history: Sequence[tuple[str, str]], suggested: Sequence[str]) -> list[str]:
        return self.index.search(user_text(history), self.k, exclude=suggested)

    def shown(self, history: Sequence[tuple[str, str]]) -> list[list[str]]:
        """Item ids shown after each user turn of `history`."""
        out: list[list[str]] = []
        suggested: dict[str, None] = {}
        for i, (speaker, text) in enumerate(history):
            if speaker == "user":
                out.append(self.next(history[:i + 1], list(suggested)))
            else:
                suggested.update(dict.fromkeys(self.catalog.ground(text)))
        return out

    def view(self, history: Sequence[tuple[str, str]], *, item: str = "movie") -> list[tuple[str, str]]:
        names = [candidate_labels(self.catalog, self.cards, ids) for ids in self.shown(history)]
        return recommender_history(history, names, item=item)


def candidate_labels(catalog: Catalog, cards: ItemCards | None, item_ids: Sequence[str]) -> list[str]:
    """How the recommender is shown its candidates: cards, or display names."""
    return cards.labels(item_ids) if cards is not None else display_names(catalog, item_ids)


class DialogueProtocol:
    def __init__(self, config: GenerateConfig, catalog: Catalog):
        conv = config.conversation
        self.catalog, self.item = catalog, conv.item_noun
        self.is_reference = config.protocol == "reference"
        self.num_candidates = config.num_candidates
        self.accept_marker = conv.accept_marker
        self._markers = {"accept_marker": conv.accept_marker, "quit_marker": conv.quit_marker}
        self._user_template = config.user.system_prompt
        self.cards = ItemCards(catalog, config.user.max_card_chars, config.user.card_fit) \
            if config.user.item_cards else None
        self._recommender_system = recommender_system_prompt(
            item=self.item, template=config.recommender.system_prompt, with_candidates=self.num_candidates > 0)
        # The user opens and each recommender turn suggests one shortlisted item; the target's suggestion needs a
        # user turn after it, so it comes at most (max_turns - 1) // 2 suggestions in.
        self.suggests_retrieved = config.suggests_retrieved
        self._shortlist = Shortlist(catalog, self.num_candidates, config.seed, (conv.max_turns - 1) // 2) \
            if self.is_reference and not self.suggests_retrieved and self.num_candidates else None
        self._retrieved = RetrievedCandidates(catalog, self.num_candidates) \
            if (not self.is_reference or self.suggests_retrieved) and self.num_candidates else None
        self.openers = config.reply_openers
        self.constrain = config.constrain_to_candidates
        self.constrain_user = self.is_reference and config.constrain_user_replies

    def messages(self, conv: Conversation, role: str) -> list[dict[str, str]]:
        """The chat messages `role` is prompted with for its next turn in `conv`; sets what its reply must match
        (conv.pending_regex) when the turn is constrained."""
        if role == "recommender":
            if conv.pending_candidates is None:
                conv.pending_candidates = self.candidates(conv)
                conv.pending_opener = self._opener(conv)
                if self.constrain and conv.pending_candidates:
                    # The teacher suggests its shortlist in order (shortlist.py); a free recommender picks one.
                    names = display_names(self.catalog, conv.pending_candidates)
                    conv.pending_regex = naming_one_of(names[:1] if self.is_reference else names,
                                                       conv.pending_opener, one_item=self.is_reference)
            messages = role_messages("recommender", self._recommender_system, self._recommender_view(conv),
                                     item=self.item)
            if conv.pending_opener:  # the reply continues this unfinished assistant message
                messages.append({"role": "assistant", "content": conv.pending_opener})
            return messages
        messages = role_messages("user", self._user_system(conv), self._user_view(conv), item=self.item)
        conv.pending_accept = self.is_reference and self._accepts(conv)
        if self.constrain_user:
            conv.pending_opener, conv.pending_regex = self._user_turn(conv)
            if conv.pending_opener:
                messages.append({"role": "assistant", "content": conv.pending_opener})
        return messages

    def candidates(self, conv: Conversation) -> list[str]:
        """The catalog items to show the recommender before its next turn."""
        suggested = conv.recommended_item_ids
        if self._shortlist is not None:
            shortlist = self._shortlist.for_conversation(conv.conversation_id, conv.seed.target_item_id,
                                                         conv.seed.target_attributes)
            return [i for i in shortlist if i not in suggested]
        if self._retrieved is not None:
            return self._retrieved.next(conv.history, suggested)
        return []

    def _opener(self, conv: Conversation) -> str:
        if not self.openers:
            return ""
        key = hashlib.blake2b(f"{conv.conversation_id}@{len(conv.turns)}".encode(), digest_size=4).digest()
        return self.openers[int.from_bytes(key, "little") % len(self.openers)]

    def _recommender_view(self, conv: Conversation) -> list[tuple[str, str]]:
        shown = [candidate_labels(self.catalog, self.cards, t.candidate_item_ids)
                 for t in conv.turns if t.role == "recommender"]
        shown.append(candidate_labels(self.catalog, self.cards, conv.pending_candidates or []))
        return recommender_history(conv.history, shown, item=self.item)

    def _target_name(self, conv: Conversation) -> str | None:
        return self.catalog.get(conv.seed.target_item_id).display if self.is_reference else None

    def _user_system(self, conv: Conversation) -> str:
        seed = conv.seed
        return user_system_prompt(seed.preference_summary, seed.target_attributes, item=self.item,
                                  template=self._user_template, target=self._target_name(conv), **self._markers)

    def _user_view(self, conv: Conversation) -> list[tuple[str, str]]:
        named = [t.item_ids for t in conv.turns if t.role == "recommender"]
        view = user_history(conv.history, self.cards, named, conv.seed.target_attributes)
        if not self.is_reference:
            return view
        # The teacher's notes follow the cards: whether each suggestion is the target, and if not, what it misses.
        target, name = conv.seed.target_item_id, self._target_name(conv)
        for k, turn in enumerate(conv.turns):
            if turn.role == "recommender" and turn.item_ids:
                speaker, text = view[k]
                view[k] = (speaker, text + self._note(turn.item_ids, target, name, conv.seed.target_attributes))
        return view

    def _accepts(self, conv: Conversation) -> bool:
        """Does the teacher's next user turn accept the latest suggestion? The target, always; with suggest_from:
        retrieved, any suggestion of one item that fits the target attributes (common/attributes.py)."""
        if conv.target_just_suggested:
            return True
        last = conv.turns[-1] if conv.turns else None
        if not self.suggests_retrieved or last is None or last.role != "recommender" or len(last.item_ids) != 1:
            return False
        item = self.catalog.get(last.item_ids[0])
        return item is not None and fits(item.attributes, conv.seed.target_attributes)

    def _note(self, item_ids: Sequence[str], target: str, name: str | None,
              wanted: Mapping[str, Sequence[str]]) -> str:
        if target in item_ids:
            return TARGET_SUGGESTED_NOTE.format(item=self.item, target=name)
        lacking = self._missing(item_ids[0], wanted)
        if self.suggests_retrieved and len(item_ids) == 1 and not lacking and self.catalog.get(item_ids[0]) is not None:
            return FITS_NOTE.format(item=self.item)
        if lacking:
            return REJECT_REASON_NOTE.format(item=self.item, wanted=format_attributes(lacking))
        return OTHER_SUGGESTED_NOTE.format(item=self.item)

    def _missing(self, item_id: str, wanted: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        item = self.catalog.get(item_id)
        return missing(item.attributes, wanted) if item is not None else {}

    def _user_turn(self, conv: Conversation) -> tuple[str, str | None]:
        """(opener, regex) of the teacher's user simulator's next turn (dialogue/teacher.py): its opening names
        what it wants, a rejection names a wanted value the suggestion lacks, the reply to the target accepts."""
        wanted, key = conv.seed.target_attributes, conv.conversation_id
        if not conv.turns:
            said = teacher.opening_values(wanted, key) if self.suggests_retrieved else wanted
            return teacher.opening(said, key, item=self.item), teacher.CONTINUATION
        last = conv.turns[-1]
        if last.role != "recommender" or not last.item_ids:
            return "", None
        if conv.pending_accept:
            return "", teacher.acceptance(_escape(self.accept_marker))
        lacking = self._missing(last.item_ids[0], wanted)
        if not lacking:  # a suggestion that fits but is not the target (a seed file's own attributes)
            return "", None
        return teacher.rejection(lacking, key, len(conv.turns) // 2, item=self.item), teacher.CONTINUATION
