"""The teacher that suggests from retrieved candidates (protocol: reference, recommender.suggest_from: retrieved):
its recommender is shown what a served reference-free recommender with k candidates is shown and suggests the
first of them; its user simulator accepts the first suggestion that fits the target attributes and rejects the
others saying what they lack. All plain Python: the protocol renders the views, the tests write the replies."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from conftest import make_catalog
from interplay.common.roles import PROTOCOL_ACCEPT_NOTE
from interplay.generator.dialogue import teacher
from interplay.generator.dialogue.conversation import Completion, Conversation, Outcome
from interplay.generator.dialogue.parsing import ReplyParser
from interplay.generator.dialogue.prompts import FITS_NOTE, REJECT_REASON_NOTE
from interplay.generator.dialogue.protocol import DialogueProtocol, RetrievedCandidates
from interplay.generator.inputs.seeds import Seed

CRIME = {"genres": ["Crime"]}  # the test catalog has no decades: only a wish for genres can be met


def teacher_protocol(make_config, k: int = 3) -> DialogueProtocol:
    config = make_config(protocol="reference", recommender={"suggest_from": "retrieved", "num_candidates": k},
                         conversation={"max_turns": 10})
    return DialogueProtocol(config, make_catalog())


def say(protocol: DialogueProtocol, conv: Conversation, text: str) -> None:
    """The next turn of `conv` says `text` after the protocol rendered its prompt (as the scheduler does)."""
    protocol.messages(conv, conv.next_role)
    written = text[len(conv.pending_opener):] if text.startswith(conv.pending_opener) else text
    conv.add_reply(Completion(written, 1, 1, 0, "stop"), ReplyParser(), protocol.catalog, 10, reference=True)


def test_the_recommender_is_shown_the_served_candidates_and_must_name_the_first(make_config) -> None:
    protocol = teacher_protocol(make_config)
    conv = Conversation("c", 0, Seed("c", "likes crime", CRIME, "m6"))
    say(protocol, conv, "I want something funny.")
    protocol.messages(conv, "recommender")
    shown = RetrievedCandidates(make_catalog(), 3).next(conv.history, [])
    assert conv.pending_candidates == shown
    names = [make_catalog().get(i).display for i in shown]
    assert re.fullmatch(conv.pending_regex, f" {names[0]}, a fun one.")
    assert not re.fullmatch(conv.pending_regex, f" {names[1]}, a fun one.")


def test_the_user_accepts_the_first_suggestion_that_fits_and_rejects_the_rest(make_config) -> None:
    protocol = teacher_protocol(make_config)
    conv = Conversation("c", 0, Seed("c", "likes crime", CRIME, "m6"))
    say(protocol, conv, "I want something funny.")
    say(protocol, conv, "How about Toy Story (1995)? a fun one.")  # Animation, Comedy: no Crime
    view = protocol.messages(conv, "user")
    assert not conv.pending_accept and view[-1] == {"role": "assistant", "content": conv.pending_opener}
    assert view[-2]["content"].endswith(REJECT_REASON_NOTE.format(item="movie", wanted="genres: Crime"))
    assert conv.pending_opener in [t.format(wanted="a crime movie") for t in teacher.REJECTION_TEMPLATES]
    assert not re.fullmatch(conv.pending_regex, " fine [ACCEPT]")
    say(protocol, conv, conv.pending_opener + " please.")
    say(protocol, conv, "Try Heat (1995). a classic.")  # Crime, Thriller: fits, though the target is m6
    view = protocol.messages(conv, "user")
    assert conv.pending_accept and view[-1]["content"].endswith(FITS_NOTE.format(item="movie"))
    assert re.fullmatch(conv.pending_regex, "[ACCEPT] Great, I will watch it.")
    say(protocol, conv, "[ACCEPT] Great, I will watch it.")
    assert conv.outcome is Outcome.ACCEPTED and conv.accepted_item_id == "m1" and conv.turns[-1].note is None


def test_an_acceptance_without_the_marker_is_recorded_on_the_fitting_item(make_config) -> None:
    protocol = teacher_protocol(make_config)
    conv = Conversation("c", 0, Seed("c", "likes crime", CRIME, "m6"))
    say(protocol, conv, "I want a crime movie.")
    say(protocol, conv, "Try Fargo (1996). a cold one.")  # Crime, Comedy
    say(protocol, conv, "Hmm, maybe.")
    assert conv.outcome is Outcome.ACCEPTED and conv.accepted_item_id == "m3"
    assert conv.turns[-1].note == PROTOCOL_ACCEPT_NOTE


def test_the_shortlist_teacher_still_accepts_only_the_target(make_config) -> None:
    config = make_config(protocol="reference", conversation={"max_turns": 10})
    protocol = DialogueProtocol(config, make_catalog())
    conv = Conversation("c", 0, Seed("c", "likes crime", CRIME, "m6"))
    say(protocol, conv, "I want a crime movie.")
    say(protocol, conv, "Try Heat (1995). a classic.")  # fits, but under shortlist only the target is taken
    protocol.messages(conv, "user")
    assert not conv.pending_accept


def test_training_recomputes_the_candidates_the_teacher_showed(make_config) -> None:
    """The served recommender is trained on the lists retrieval recomputes from the stored words: under
    suggest_from: retrieved they are the teacher's own, turn for turn."""
    protocol = teacher_protocol(make_config)
    conv = Conversation("c", 0, Seed("c", "likes crime", {"genres": ["Sci-Fi"]}, "m5"))
    say(protocol, conv, "Something funny, please.")
    for _ in range(3):
        protocol.messages(conv, "recommender")
        first = make_catalog().get(conv.pending_candidates[0]).display
        say(protocol, conv, f"How about {first}? one to try.")
        if conv.is_finished:
            break
        say(protocol, conv, "No, something else.")
    shown = [t.candidate_item_ids for t in conv.turns if t.role == "recommender"]
    assert len(shown) >= 2 and RetrievedCandidates(make_catalog(), 3).shown(conv.history)[:len(shown)] == shown


def test_openings_say_all_of_the_wish_in_a_share_else_one_attribute() -> None:
    wish = {"genres": ["Crime", "Drama"], "decade": ["1990s"]}
    said = [teacher.opening_values(wish, f"conv-{i}") for i in range(2000)]
    everything = sum(s == wish for s in said) / len(said)
    assert abs(everything - teacher.OPENING_SAYS_ALL) < 0.05
    parts = Counter(next(iter(s)) for s in said if s != wish)
    assert all(len(s) == 1 and s[name] == wish[name] for s in said if s != wish for name in s)
    assert set(parts) == {"genres", "decade"}  # either part, not always the same one
    assert teacher.opening_values({"genres": ["Crime"], "decade": []}, "c") == {"genres": ["Crime"]}


def test_suggest_from_is_a_teacher_setting(make_config) -> None:
    with pytest.raises(Exception, match="suggest_from: only for protocol: reference"):
        make_config(recommender={"suggest_from": "retrieved", "num_candidates": 3})
    with pytest.raises(Exception, match="shortlist"):
        make_config(protocol="reference", recommender={"suggest_from": "popular"})
    assert make_config(protocol="reference", recommender={"suggest_from": "retrieved"}).hash() \
        != make_config(protocol="reference").hash()
