"""Tests for interplay.generator.dialogue.prompts, and for run.prompt_messages, which renders them per conversation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_catalog
from interplay.generator.config import load_config
from interplay.generator.dialogue.conversation import Conversation, Turn
from interplay.generator.dialogue.prompts import (
    USER_OPENING,
    corpus_messages,
    format_attributes,
    recommender_system_prompt,
    role_messages,
    user_system_prompt,
)
from interplay.generator.inputs.seeds import Seed
from interplay.generator.runtime.run import prompt_messages

SUMMARY = "Loves slow-burning 1970s paranoia thrillers and anything with Gene Hackman."
ATTRIBUTES = {"genres": ["Thriller", "Mystery"], "decade": ["1970s"], "empty": []}
FORMATTED = "genres: Thriller, Mystery; decade: 1970s"
TARGET = "item-4242"
SEED = Seed("seed-1", SUMMARY, ATTRIBUTES, TARGET)
HISTORY = [("user", "u0"), ("recommender", "r1"), ("user", "u2"), ("recommender", "r3"), ("user", "u4")]


def config(**overrides):
    return load_config(None, {"engine.model": "HuggingFaceTB/SmolLM2-135M-Instruct", **overrides})


def conversation(history: list[tuple[str, str]]) -> Conversation:
    conv = Conversation("seed-1", 0, SEED)
    for role, text in history:
        conv.turns.append(Turn(role, text, text, 10, 5, 0, "stop", []))
    return conv


def all_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)


# ---------------------------------------------------------------------------------------------- system prompts


def test_format_attributes():
    assert format_attributes(ATTRIBUTES) == FORMATTED
    assert format_attributes({}) == ""


def test_user_system_prompt_contents():
    prompt = user_system_prompt(SUMMARY, ATTRIBUTES, item="book", accept_marker="<<yes>>", quit_marker="<<no>>")
    assert SUMMARY in prompt
    assert FORMATTED in prompt
    assert "<<yes>>" in prompt and "<<no>>" in prompt
    assert "[ACCEPT]" not in prompt
    assert "book" in prompt and "movie" not in prompt
    assert "{" not in prompt  # every placeholder filled


def test_user_system_prompt_braces_in_summary_are_kept():
    summary = "Likes {weird} titles like {item}"
    assert summary in user_system_prompt(summary, ATTRIBUTES)


def test_user_system_prompt_custom_template():
    prompt = user_system_prompt(SUMMARY, ATTRIBUTES, template="S={preference_summary} A={target_attributes}")
    assert prompt == f"S={SUMMARY} A={FORMATTED}"


def test_recommender_system_prompt_contents():
    prompt = recommender_system_prompt(item="book")
    assert "book" in prompt and "{" not in prompt
    assert recommender_system_prompt(template="Recommend {item}s.") == "Recommend movies."


def test_rendered_user_prompt_has_seed_never_target():
    render = prompt_messages(config(), make_catalog())
    for k in range(0, len(HISTORY) + 1, 2):  # the user's turns: histories of even length
        messages = render(conversation(HISTORY[:k]), "user")
        assert SUMMARY in messages[0]["content"]
        assert FORMATTED in messages[0]["content"]
        assert TARGET not in all_text(messages)


def test_rendered_recommender_prompt_has_no_seed():
    render = prompt_messages(config(), make_catalog())
    for k in range(1, len(HISTORY) + 1, 2):  # the recommender's turns
        text = all_text(render(conversation(HISTORY[:k]), "recommender"))
        assert SUMMARY not in text
        assert "Thriller" not in text and "1970s" not in text
        assert TARGET not in text
        assert USER_OPENING.format(item="movie") not in text  # the recommender never sees the opening


def test_rendered_prompts_use_config():
    cfg = config(**{"conversation.item_noun": "podcast", "conversation.accept_marker": "<<yes>>",
                    "recommender.system_prompt": "Recommend {item}s only."})
    render = prompt_messages(cfg, make_catalog())
    user = render(conversation([]), "user")
    assert "<<yes>>" in user[0]["content"] and "podcast" in user[0]["content"]
    assert user[1]["content"] == USER_OPENING.format(item="podcast")
    assert render(conversation(HISTORY[:1]), "recommender")[0]["content"] == "Recommend podcasts only."


# ---------------------------------------------------------------------------------------------- role messages


def test_role_messages_user():
    messages = role_messages("user", "SYS", HISTORY[:4])
    assert messages == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": USER_OPENING.format(item="movie")},
        {"role": "assistant", "content": "u0"},
        {"role": "user", "content": "r1"},
        {"role": "assistant", "content": "u2"},
        {"role": "user", "content": "r3"},
    ]


def test_role_messages_user_empty_history():
    assert role_messages("user", "SYS", [], item="book") == [
        {"role": "system", "content": "SYS"}, {"role": "user", "content": USER_OPENING.format(item="book")}]


def test_role_messages_recommender():
    messages = role_messages("recommender", "SYS", HISTORY[:3])
    assert messages == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "u0"},
        {"role": "assistant", "content": "r1"},
        {"role": "user", "content": "u2"},
    ]


def test_corpus_messages():
    assert corpus_messages(HISTORY[:3]) == [
        {"role": "user", "content": "u0"},
        {"role": "assistant", "content": "r1"},
        {"role": "user", "content": "u2"},
    ]
    assert corpus_messages([]) == []


def _alternates(messages: list[dict[str, str]]) -> bool:
    roles = [m["role"] for m in messages[1:]]
    return all(r == ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles))


@pytest.mark.parametrize("role", ["user", "recommender"])
def test_prompt_ends_with_other_side_and_alternates(role: str):
    # a role is prompted when the other side spoke last (the user also at the start): the chat template then
    # sees system, user, assistant, user, ... ending with a user message
    for k in range(len(HISTORY) + 1):
        if (role == "user") != (k % 2 == 0):
            continue
        messages = role_messages(role, "SYS", HISTORY[:k])
        assert messages[0]["role"] == "system"
        assert _alternates(messages)
        assert messages[-1]["role"] == "user"


# ----------------------------------------------------------------------------------------------- prefix property

HISTORIES = st.lists(st.text(max_size=30), max_size=12).map(
    lambda texts: [("user" if i % 2 == 0 else "recommender", t) for i, t in enumerate(texts)])


@settings(max_examples=100, deadline=None)
@given(HISTORIES, st.sampled_from(["user", "recommender"]))
def test_role_messages_grow_by_appending(history: list[tuple[str, str]], role: str):
    for k in range(len(history)):
        shorter = role_messages(role, "SYS", history[:k])
        longer = role_messages(role, "SYS", history[:k + 1])
        assert longer[:len(shorter)] == shorter
        assert len(longer) == len(shorter) + 1


@pytest.mark.parametrize("role", ["user", "recommender"])
def test_rendered_prompts_grow_by_appending(role: str):
    # the real renderer: the system prompt must not depend on how far the conversation is
    render = prompt_messages(config(), make_catalog())
    previous = None
    for k in range(len(HISTORY) + 1):
        messages = render(conversation(HISTORY[:k]), role)
        if previous is not None:
            assert messages[:len(previous)] == previous
            assert len(messages) == len(previous) + 1
        previous = messages


def test_corpus_messages_grow_by_appending():
    for k in range(len(HISTORY)):
        assert corpus_messages(HISTORY[:k + 1])[:k] == corpus_messages(HISTORY[:k])


def test_built_in_prompts_are_generic_in_the_item_noun():
    """No built-in prompt assumes films: every one reads right for `item_noun: podcast`."""
    from interplay.generator.dialogue import prompts
    from interplay.generator.runtime import baseline
    from interplay.training import summarize

    texts = [prompts.USER_SYSTEM, prompts.USER_SYSTEM_REFERENCE, prompts.RECOMMENDER_SYSTEM,
             prompts.CANDIDATES_INSTRUCTION, prompts.USER_OPENING, prompts.TARGET_SUGGESTED_NOTE,
             prompts.OTHER_SUGGESTED_NOTE, baseline.SYSTEM, baseline.PROMPT]
    texts += [v for k, v in vars(summarize).items() if k.isupper() and isinstance(v, str) and "{item}" in v]
    for text in texts:
        assert not {"watch", "film", "movie", "cinema"} & set(text.lower().replace(".", " ").split()), text
