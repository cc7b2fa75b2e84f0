"""One role's training example from one dialogue: the serving prompt, token for token, with the loss on that role.

The prompt of each of the role's turns is rendered exactly as the generator serves it: the system prompt and
messages from interplay.generator.dialogue.prompts, then `tokenizer.apply_chat_template(messages,
add_generation_prompt=True, tokenize=True, return_dict=False)` as engine.VllmRoleClient.render does. Prompts only
grow by appending, so one sequence holds every turn: the whole dialogue seen from the role's side is rendered
once, and each turn's span is found by rendering the growing prefixes (the prompt before the turn, and the
messages up to and including it). The loss covers the span from the end of the turn's prompt through the first
end-of-turn token (what the model generates, and where vLLM stops it); everything else is masked with -100.

  user simulator  system prompt with preference summary and target attributes, the dialogue from the user's side
                  (its turns are `assistant` messages); its last turn gets the accept or quit marker back when the
                  dialogue ended that way, since the corpus stores turns with markers stripped
  recommender     recommender system prompt and the history only: no summary, no attributes, no target; served
                  with retrieved catalog candidates (prompts.num_candidates), each user message carries the list
                  the generator would have shown after it, recomputed from the dialogue's own words
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from interplay.generator.dialogue.prompts import recommender_system_prompt, role_messages, user_system_prompt
from interplay.generator.dialogue.protocol import RetrievedCandidates, user_history
from interplay.generator.inputs.cards import ItemCards
from interplay.training.config import PromptSettings
from interplay.training.data import Dialogue
from interplay.training.errors import TrainingInputError

IGNORE = -100
# The first tokens of a turn say what it decides: "[ACCEPT] That's it!", "Not for me, ...", "How about Heat ...".
DECISION_TOKENS = 4


@dataclass(frozen=True, slots=True)
class Example:
    dialogue_id: str
    input_ids: list[int]
    labels: list[int]        # the token where the role speaks, IGNORE elsewhere
    num_turns: int           # the role's turns with loss (fewer than in the dialogue when it was cut)
    decisions: tuple[int, ...] = ()  # positions of decision tokens (decision_positions), for train.decision_weight


def render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool) -> list[int]:
    # The call engine.VllmRoleClient.render makes (with add_generation_prompt=True for a prompt).
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                              return_dict=False))


def end_of_turn_ids(tokenizer: Any, model_path: str | None = None) -> set[int]:
    """Token ids that end a turn: the tokenizer's EOS and the generation config's (vLLM stops at either)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if model_path is not None:
        try:
            from transformers import GenerationConfig

            eos = GenerationConfig.from_pretrained(model_path).eos_token_id
            ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        except OSError:  # no generation_config.json: the tokenizer's EOS only
            pass
    return ids


def item_cards(prompts: PromptSettings) -> ItemCards | None:
    """The cards the served roles read, when they are served with them."""
    if not prompts.item_cards:
        return None
    from interplay.generator.inputs.catalog import Catalog, CatalogError

    try:
        catalog = Catalog.load(prompts.catalog)
    except CatalogError as e:
        raise TrainingInputError(f"prompts.catalog: {e}") from None
    if not ItemCards.has_attributes(catalog):
        raise TrainingInputError(f"prompts.item_cards: the catalog {prompts.catalog} has no attributes to show on a "
                                 "card; give its items attributes (genres, ...) or serve without item cards")
    return ItemCards(catalog, prompts.max_card_chars, prompts.card_fit)


def candidate_view(prompts: PromptSettings, cards: ItemCards | None = None) -> RetrievedCandidates | None:
    """The served recommender's candidate lists, when it is served with them (built once: it indexes the catalog)."""
    if not prompts.num_candidates:
        return None
    from interplay.generator.inputs.catalog import Catalog, CatalogError

    try:
        catalog = cards.catalog if cards is not None else Catalog.load(prompts.catalog)
    except CatalogError as e:
        raise TrainingInputError(f"prompts.catalog: {e}") from None
    return RetrievedCandidates(catalog, prompts.num_candidates, cards=cards)


def role_view(role: str, dialogue: Dialogue, prompts: PromptSettings, candidates: RetrievedCandidates | None = None,
              cards: ItemCards | None = None) -> tuple[str, list[tuple[str, str]]] | str:
    """(system prompt, history as the role is trained on it), or why the dialogue cannot train this role."""
    history = list(dialogue.turns)
    if role == "recommender":
        system = recommender_system_prompt(item=prompts.item_noun, template=prompts.recommender_system_prompt,
                                           with_candidates=candidates is not None)
        if candidates is not None:
            history = candidates.view(history, item=prompts.item_noun)
        return system, history
    if dialogue.preference_summary is None:
        return "no preference_summary (run `interplay summarize` on this data first)"
    if not dialogue.target_attributes:
        return "no target_attributes (run `interplay summarize` on this data first)"
    marker = {"accept": prompts.accept_marker, "quit": prompts.quit_marker}.get(dialogue.ending or "")
    if marker and history[-1][0] == "user":
        speaker, text = history[-1]
        history[-1] = (speaker, f"{marker} {text}" if text else marker)  # first, as the user's prompt asks
    history = user_history(history, cards, wanted=dialogue.target_attributes)
    system = user_system_prompt(dialogue.preference_summary, dialogue.target_attributes, item=prompts.item_noun,
                                accept_marker=prompts.accept_marker, quit_marker=prompts.quit_marker,
                                template=prompts.user_system_prompt)
    return system, history


def build_example(tokenizer: Any, role: str, dialogue: Dialogue, prompts: PromptSettings, *, max_seq_len: int,
                  eos_ids: set[int], candidates: RetrievedCandidates | None = None,
                  cards: ItemCards | None = None) -> Example | str:
    """The role's example from `dialogue`, or the reason there is none."""
    view = role_view(role, dialogue, prompts, candidates, cards)
    if isinstance(view, str):
        return view
    system, history = view
    # Context turns (PEARL's fixed opening) are in the prompt but never carry the loss.
    positions = [k for k, (speaker, _) in enumerate(history) if speaker == role and k >= dialogue.num_context_turns]
    if not positions:
        return f"no {role} turn"
    full = render(tokenizer, role_messages(role, system, history[:positions[-1] + 1], item=prompts.item_noun),
                  generation_prompt=False)
    labels = [IGNORE] * len(full)
    end, num_turns, decisions = 0, 0, []
    markers = marker_token_ids(tokenizer, prompts) if role == "user" else []
    for k in positions:
        prompt = render(tokenizer, role_messages(role, system, history[:k], item=prompts.item_noun),
                        generation_prompt=True)
        after = render(tokenizer, role_messages(role, system, history[:k + 1], item=prompts.item_noun),
                       generation_prompt=False)
        if full[:len(prompt)] != prompt or full[:len(after)] != after or len(after) <= len(prompt):
            # A template that rewrites earlier turns (or a token merge across the boundary): training on it
            # would teach a prompt the generator never serves.
            return "chat template does not render prompts as prefixes"
        stop = next((i + 1 for i in range(len(prompt), len(after)) if full[i] in eos_ids), len(after))
        if stop > max_seq_len:
            break
        labels[len(prompt):stop] = full[len(prompt):stop]
        decisions += decision_positions(full, len(prompt), stop, markers)
        end, num_turns = stop, num_turns + 1
    if num_turns == 0:
        return "first turn does not fit max_seq_len"
    return Example(dialogue.dialogue_id, full[:end], labels[:end], num_turns, tuple(decisions))


def marker_token_ids(tokenizer: Any, prompts: PromptSettings) -> list[list[int]]:
    """The accept and quit markers as token ids, with and without a leading space (how they follow a word)."""
    out = []
    for marker in (prompts.accept_marker, prompts.quit_marker):
        for text in (marker, f" {marker}"):
            ids = list(tokenizer.encode(text, add_special_tokens=False))
            if ids and ids not in out:
                out.append(ids)
    return out


def decision_positions(ids: Sequence[int], start: int, stop: int, markers: Sequence[Sequence[int]]) -> list[int]:
    """The positions in ids[start:stop] (one turn) whose tokens carry its decision: its first DECISION_TOKENS
    tokens, where a turn accepts (the marker comes first), rejects ("Not quite: ...") or asks, and any marker's
    tokens wherever a template of one's own puts them."""
    positions = set(range(start, min(start + DECISION_TOKENS, stop)))
    for marker in markers:
        n = len(marker)
        for i in range(start, stop - n + 1):
            if list(ids[i:i + n]) == list(marker):
                positions.update(range(i, i + n))
    return sorted(positions)


@dataclass
class ExampleStats:
    num_dialogues: int = 0
    num_examples: int = 0
    num_turns: int = 0
    num_tokens: int = 0
    num_loss_tokens: int = 0
    num_cut: int = 0         # dialogues cut at max_seq_len (some turns dropped)
    skipped: Counter = field(default_factory=Counter)  # by reason

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}


def build_examples(tokenizer: Any, role: str, dialogues: Iterable[Dialogue], prompts: PromptSettings, *,
                   max_seq_len: int, eos_ids: set[int]) -> tuple[list[Example], ExampleStats]:
    stats, examples = ExampleStats(), []
    cards = item_cards(prompts)
    candidates = candidate_view(prompts, cards) if role == "recommender" else None
    for dialogue in dialogues:
        stats.num_dialogues += 1
        example = build_example(tokenizer, role, dialogue, prompts, max_seq_len=max_seq_len, eos_ids=eos_ids,
                                candidates=candidates, cards=cards)
        if isinstance(example, str):
            stats.skipped[example] += 1
            continue
        examples.append(example)
        stats.num_examples += 1
        stats.num_turns += example.num_turns
        stats.num_tokens += len(example.input_ids)
        stats.num_loss_tokens += sum(t != IGNORE for t in example.labels)
        role_turns = sum(speaker == role for speaker, _ in dialogue.turns[dialogue.num_context_turns:])
        stats.num_cut += example.num_turns < role_turns
    return examples, stats


def loss_spans(example: Example) -> list[tuple[int, int]]:
    """[start, end) of each run of loss tokens (for inspection and tests)."""
    spans, start = [], None
    for i, label in enumerate([*example.labels, IGNORE]):
        if label != IGNORE and start is None:
            start = i
        elif label == IGNORE and start is not None:
            spans.append((start, i))
            start = None
    return spans


def describe(tokenizer: Any, example: Example, sep: Sequence[str] = ("[[", "]]")) -> str:
    """The example's text with the loss spans bracketed: `interplay train --show-example` prints it."""
    out, prev = [], 0
    for start, end in loss_spans(example):
        out += [tokenizer.decode(example.input_ids[prev:start]), sep[0],
                tokenizer.decode(example.input_ids[start:end]), sep[1]]
        prev = end
    out.append(tokenizer.decode(example.input_ids[prev:]))
    return "".join(out)
