"""Prompt rendering for both roles, shared by generation and training so that both see identical prompts.

Under the reference-free protocol (the method) the user simulator sees its preference summary and target
attributes, never the target item; the recommender sees only the conversation, plus the catalog candidates it is
shown (attached to the user message they follow). Under the reference protocol (the teacher) the user simulator
is steered towards the target: each recommender message reaches it with a note saying whether it is the target. Each role sees the dialogue from its own side: its own turns are `assistant`
messages, the other role's turns are `user` messages. Histories only grow by appending, so every turn's prompt
starts with the previous turn's prompt and vLLM's prefix cache serves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

USER_SYSTEM = """\
You are a person chatting with a {item} recommender to find a {item} for tonight.
About you: {preference_summary}
What you are in the mood for now: {target_attributes}.
Write only your own short messages (one or two sentences), never the recommender's. Say what you want, answer \
its questions, and react to every {item} it suggests, saying why it fits or not. When it suggests a {item} that \
matches what you want now, start your message with {accept_marker} and say which one you pick. If nothing \
fits after several suggestions, start your message with {quit_marker} and say goodbye."""

# The teacher's user simulator (protocol: reference). It is steered by the notes below, which say whether each
# suggestion is the target; its system prompt does not name the target. With the title in it, SmolLM2-135M named
# the target before the recommender did in 5 of 32 teacher dialogues, and in 0 of 32 without, at the same
# acceptance (13 of 32): a small model cannot keep a secret it is told. A template of your own may use {target}.
USER_SYSTEM_REFERENCE = """\
You are a person chatting with a {item} recommender to find a {item} for tonight.
About you: {preference_summary}
What you are in the mood for now: {target_attributes}.
Write only your own short messages (one or two sentences), never the recommender's. Say what you want and \
answer its questions. When it suggests a {item} that is not the one you are hoping for, say in a few words why \
it does not fit you. When it suggests the one you are hoping for, start your message with {accept_marker} and \
say you will take it."""

# Notes the teacher's user simulator reads after each recommender message; never stored, never trained on.
TARGET_SUGGESTED_NOTE = "\n\n(This is {target}, the {item} you were hoping for: take it.)"
OTHER_SUGGESTED_NOTE = "\n\n(Not the {item} you are hoping for.)"
FITS_NOTE = "\n\n(This {item} has everything you want: take it.)"
REJECT_REASON_NOTE = "\n\n(Not the {item} you are hoping for. It lacks what you want: {wanted}. Say so.)"

# The simulator speaks first, but chat templates expect a user message before the first assistant one, and small
# models answer a greeting far better than an instruction: the simulator's prompt opens with this greeting,
# which is not part of the stored dialogue and which the recommender never sees.
USER_OPENING = "Hi! What kind of {item} are you in the mood for today?"

RECOMMENDER_SYSTEM = """\
You are a friendly {item} recommender chatting with a user. Ask short questions to learn what they want, then \
recommend {item}s that fit. Name every {item} exactly as Title (Year). Suggest one {item} per message with a \
short reason, and a different one when the user rejects it. Keep your messages short."""

# A small model asked to "suggest a movie" often talks around it; started on one of these words, it names one. The
# opener is part of the stored turn (the recommender said it), chosen per conversation and turn.
DEFAULT_OPENERS = ("How about", "You might like", "I would suggest", "Have you seen", "Try")

# Added to the recommender's system prompt when it is shown catalog candidates.
CANDIDATES_INSTRUCTION = """ A user message may end with a list of catalog {item}s that fit what they said: \
pick the one that fits best and suggest it by its exact name."""
# Attached to the user message it follows, in the recommender's view only; kept in its history, so prompts still
# only grow by appending.
CANDIDATES_NOTE = "\n\n[catalog: {candidates}]"


PLACEHOLDERS = ("item", "preference_summary", "target_attributes", "accept_marker", "quit_marker", "target")


def check_template(template: str) -> None:
    """Raise ValueError naming the problem if `template` cannot be rendered with the known placeholders."""
    try:
        template.format(**{name: "" for name in PLACEHOLDERS})
    except KeyError as e:
        raise ValueError(f"unknown placeholder {{{e.args[0]}}}; known: "
                         + ", ".join(f"{{{n}}}" for n in PLACEHOLDERS)) from None
    except (ValueError, IndexError) as e:
        raise ValueError(f"not a valid template ({e}); write literal braces as {{{{ and }}}}") from None


def format_attributes(attributes: Mapping[str, Sequence[str]]) -> str:
    """{"genres": ["Comedy", "Drama"], "decade": ["1990s"]} -> "genres: Comedy, Drama; decade: 1990s"."""
    return "; ".join(f"{name}: {', '.join(values)}" for name, values in attributes.items() if values)


def user_system_prompt(preference_summary: str, target_attributes: Mapping[str, Sequence[str]], *,
                       item: str = "movie", accept_marker: str = "[ACCEPT]", quit_marker: str = "[QUIT]",
                       template: str | None = None, target: str | None = None) -> str:
    """The user simulator's system prompt; `target` (the item's display name) only under the reference protocol."""
    default = USER_SYSTEM if target is None else USER_SYSTEM_REFERENCE
    return (template or default).format(
        item=item, preference_summary=preference_summary, target_attributes=format_attributes(target_attributes),
        accept_marker=accept_marker, quit_marker=quit_marker, target=target or "")


def recommender_system_prompt(*, item: str = "movie", template: str | None = None,
                              with_candidates: bool = False) -> str:
    default = RECOMMENDER_SYSTEM + (CANDIDATES_INSTRUCTION if with_candidates else "")
    return (template or default).format(item=item)


def candidates_note(names: Sequence[str], *, item: str = "movie") -> str:
    """The note a user message carries in the recommender's view: the catalog items it was shown then."""
    return CANDIDATES_NOTE.format(item=item, candidates=" | ".join(names)) if names else ""


def role_messages(role: str, system: str, history: Sequence[tuple[str, str]], *,
                  item: str = "movie") -> list[dict[str, str]]:
    """Chat messages for `role` ("user" simulator or "recommender") given the dialogue so far.

    `history` is [(speaker, text), ...] with speaker "user" or "recommender", the user first.
    """
    messages = [{"role": "system", "content": system}]
    if role == "user":
        messages.append({"role": "user", "content": USER_OPENING.format(item=item)})
    for speaker, text in history:
        messages.append({"role": "assistant" if speaker == role else "user", "content": text})
    return messages


def corpus_messages(history: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """The stored `messages` column: `user` = simulated user, `assistant` = recommender, no system prompt."""
    return [{"role": "user" if speaker == "user" else "assistant", "content": text} for speaker, text in history]
