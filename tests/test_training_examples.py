"""Tests for interplay.training.examples: the loss mask covers exactly the role's tokens, and the prompts are the
ones the generator serves, token for token.

Run with the tiny tokenizer built here (always) and SmolLM2's (when `interplay prepare` has run). The expected
sequence is built independently, piece by piece from ChatML, with each piece marked as trained or not.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from interplay.generator.config import load_config
from interplay.generator.dialogue.conversation import Conversation, Turn
from interplay.generator.dialogue.prompts import USER_OPENING, recommender_system_prompt, user_system_prompt
from interplay.generator.inputs.catalog import Catalog
from interplay.generator.inputs.seeds import Seed
from interplay.generator.runtime.run import prompt_messages
from interplay.training.config import PromptSettings
from interplay.training.data import Dialogue
from interplay.training.examples import IGNORE, build_example, build_examples, end_of_turn_ids, loss_spans

SUMMARY = "Loves: Heat (1995). Dislikes: musicals."
ATTRS = {"genres": ["Crime"], "decade": ["1990s"]}
TURNS = (("user", "A tense crime movie, please."), ("recommender", "Try Heat (1995), a heist classic."),
         ("user", "Seen it. Something newer?"), ("recommender", "The Town (2010) then."),
         ("user", "Great, The Town it is."))
DIALOGUE = Dialogue("d1", TURNS, SUMMARY, ATTRS, ending="accept", target_item="m-42")
PROMPTS = PromptSettings()


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def expected(tokenizer, messages: list[tuple[str, str]], trained_role: str = "assistant"):
    """(input_ids, labels) from ChatML pieces: a trained message's content and <|im_end|> carry the loss."""
    input_ids, labels = [], []

    def piece(text: str, train: bool) -> None:
        tokens = ids(tokenizer, text)
        input_ids.extend(tokens)
        labels.extend(tokens if train else [IGNORE] * len(tokens))

    for i, (role, content) in enumerate(messages):
        train = role == trained_role
        piece(f"<|im_start|>{role}\n", False)
        piece(content, train)
        piece("<|im_end|>", train)
        if i < len(messages) - 1:
            piece("\n", False)
    return input_ids, labels


def example(tokenizer, role: str, dialogue: Dialogue = DIALOGUE, max_seq_len: int = 4096, **prompts):
    return build_example(tokenizer, role, dialogue, PromptSettings(**prompts), max_seq_len=max_seq_len,
                         eos_ids=end_of_turn_ids(tokenizer))


def test_user_simulator_mask_token_by_token(tokenizer):
    ex = example(tokenizer, "user")
    system = user_system_prompt(SUMMARY, ATTRS)
    want_ids, want_labels = expected(tokenizer, [
        ("system", system), ("user", USER_OPENING.format(item="movie")),
        ("assistant", TURNS[0][1]), ("user", TURNS[1][1]), ("assistant", TURNS[2][1]), ("user", TURNS[3][1]),
        ("assistant", "[ACCEPT] " + TURNS[4][1]),  # the marker the corpus stripped is trained back, first
    ])
    assert ex.input_ids == want_ids
    for i, (got, want) in enumerate(zip(ex.labels, want_labels, strict=True)):
        assert got == want, f"token {i} ({tokenizer.decode([ex.input_ids[i]])!r})"
    assert ex.num_turns == 3
    assert [tokenizer.decode(ex.input_ids[a:b]) for a, b in loss_spans(ex)] == [
        TURNS[0][1] + "<|im_end|>", TURNS[2][1] + "<|im_end|>", "[ACCEPT] " + TURNS[4][1] + "<|im_end|>"]


def test_recommender_mask_token_by_token(tokenizer):
    ex = example(tokenizer, "recommender")
    want_ids, want_labels = expected(tokenizer, [
        ("system", recommender_system_prompt()), ("user", TURNS[0][1]), ("assistant", TURNS[1][1]),
        ("user", TURNS[2][1]), ("assistant", TURNS[3][1])])  # the user's last turn follows no recommender turn
    assert ex.input_ids == want_ids
    assert ex.labels == want_labels
    text = tokenizer.decode(ex.input_ids)
    # the recommender sees the history only: no summary, no attributes, no target
    assert "Heat (1995). Dislikes" not in text and "1990s" not in text and "m-42" not in text
    assert "[ACCEPT]" not in text


@pytest.mark.parametrize("role", ["user", "recommender"])
def test_prompts_are_the_generators_token_for_token(tokenizer, role: str):
    """Each trained turn starts exactly where the generator's prompt for that turn ends, and the tokens before it
    are that prompt, rendered the way engine.VllmRoleClient.render renders it."""
    config = load_config(None, {"engine.model": "HuggingFaceTB/SmolLM2-135M-Instruct"})
    conv = Conversation("d1", 0, Seed("d1", SUMMARY, ATTRS, "m-42"))
    render = prompt_messages(config, Catalog([]))
    ex = example(tokenizer, role)
    starts = [a for a, _ in loss_spans(ex)]
    k = 0
    for speaker, text in TURNS:
        if speaker == role and k < len(starts):
            served = list(tokenizer.apply_chat_template(render(conv, role), add_generation_prompt=True,
                                                        tokenize=True, return_dict=False))
            assert ex.input_ids[:starts[k]] == served
            k += 1
        conv.turns.append(Turn(speaker, text, text, 0, 0, 0, "stop", []))
    assert k == len(starts) > 0


def test_long_dialogue_is_cut_after_the_last_turn_that_fits(tokenizer):
    full = example(tokenizer, "user")
    spans = loss_spans(full)
    cut = example(tokenizer, "user", max_seq_len=spans[1][1])  # room for exactly two turns
    assert cut.num_turns == 2 and cut.input_ids == full.input_ids[:spans[1][1]]
    assert cut.labels == full.labels[:spans[1][1]]
    assert example(tokenizer, "user", max_seq_len=spans[0][1] - 1) == "first turn does not fit max_seq_len"


def test_unusable_dialogues_give_reasons(tokenizer):
    no_summary = Dialogue("d2", TURNS, None, ATTRS)
    no_attrs = Dialogue("d3", TURNS, SUMMARY, None)
    user_only = Dialogue("d4", TURNS[:1], SUMMARY, ATTRS)
    examples, stats = build_examples(tokenizer, "user", [DIALOGUE, no_summary, no_attrs, user_only], PROMPTS,
                                     max_seq_len=4096, eos_ids=end_of_turn_ids(tokenizer))
    assert [e.dialogue_id for e in examples] == ["d1", "d4"]
    assert set(stats.skipped) == {"no preference_summary (run `interplay summarize` on this data first)",
                                  "no target_attributes (run `interplay summarize` on this data first)"}
    # the recommender needs neither; a dialogue of one user turn has nothing for it
    examples, stats = build_examples(tokenizer, "recommender", [no_summary, no_attrs, user_only], PROMPTS,
                                     max_seq_len=4096, eos_ids=end_of_turn_ids(tokenizer))
    assert len(examples) == 2 and dict(stats.skipped) == {"no recommender turn": 1}
    assert stats.num_loss_tokens == sum(sum(t != IGNORE for t in e.labels) for e in examples)


def test_quit_marker_and_marker_only_turn(tokenizer):
    quit_turns = TURNS[:4] + (("user", "Never mind, bye."),)
    ex = example(tokenizer, "user", Dialogue("q", quit_turns, SUMMARY, ATTRS, ending="quit"), quit_marker="<BYE>")
    assert tokenizer.decode(ex.input_ids[slice(*loss_spans(ex)[-1])]) == "<BYE> Never mind, bye.<|im_end|>"
    only = Dialogue("a", TURNS[:4] + (("user", ""),), SUMMARY, ATTRS, ending="accept")
    ex = example(tokenizer, "user", only)
    assert tokenizer.decode(ex.input_ids[slice(*loss_spans(ex)[-1])]) == "[ACCEPT]<|im_end|>"


def test_custom_templates_and_item_noun(tokenizer):
    ex = example(tokenizer, "user", item_noun="book", user_system_prompt="Reader. {preference_summary} Wants: "
                 "{target_attributes}. Say {accept_marker}.")
    text = tokenizer.decode(ex.input_ids)
    assert f"Reader. {SUMMARY} Wants: genres: Crime; decade: 1990s. Say [ACCEPT]." in text
    assert USER_OPENING.format(item="book") in text


def test_template_that_rewrites_earlier_turns_is_refused(tokenizer):
    shifty = copy.deepcopy(tokenizer)
    # the message count in the system line changes every turn: no prompt is a prefix of the next
    shifty.chat_template = "{{ messages|length }}|" + tokenizer.chat_template
    assert example(shifty, "recommender") == "chat template does not render prompts as prefixes"


def test_end_of_turn_ids_include_the_generation_config(tmp_path: Path, tokenizer):
    from transformers import GenerationConfig

    GenerationConfig(eos_token_id=[tokenizer.eos_token_id, 7]).save_pretrained(str(tmp_path))
    assert end_of_turn_ids(tokenizer, str(tmp_path)) == {tokenizer.eos_token_id, 7}
    assert end_of_turn_ids(tokenizer, str(tmp_path / "none")) == {tokenizer.eos_token_id}


def test_recommender_served_with_candidates_trains_on_the_lists_it_would_see(tokenizer, catalog_file):
    from interplay.generator.dialogue.protocol import RetrievedCandidates
    from interplay.generator.inputs.catalog import Catalog
    from interplay.training.examples import candidate_view

    prompts = PromptSettings(num_candidates=2, catalog=str(catalog_file))
    candidates = candidate_view(prompts)
    ex = build_example(tokenizer, "recommender", DIALOGUE, prompts, max_seq_len=4096,
                       eos_ids=end_of_turn_ids(tokenizer), candidates=candidates)
    text = tokenizer.decode(ex.input_ids)
    shown = RetrievedCandidates(Catalog.load(catalog_file), 2).view(list(TURNS))
    for speaker, content in shown[:4]:
        assert content in text
    assert "[catalog: Heat (1995) | Fargo (1996)]" in text  # "tense crime": the crime thriller first
    assert "[catalog: Fargo (1996) | Pulp Fiction (1994)]" in text  # then without Heat, already suggested
    assert recommender_system_prompt(with_candidates=True) in text
    assert ex.num_turns == 2


def test_candidates_follow_the_generation_config(tmp_path):
    from interplay.training.config import prompts_from_generation_config

    config = tmp_path / "gen.yaml"
    config.write_text("recommender: {num_candidates: 5}\nseeds: {source: file, path: s.parquet, catalog: c.jsonl}\n")
    assert prompts_from_generation_config(config) == {"num_candidates": 5, "catalog": "c.jsonl"}
    config.write_text("protocol: reference\nrecommender: {num_candidates: 5}\n")
    assert prompts_from_generation_config(config) == {}  # a teacher's shortlist is never served to a trained model
    with pytest.raises(Exception, match="prompts.catalog: required"):
        PromptSettings(num_candidates=3)
