"""Tests for interplay.generator.dialogue.parsing.ReplyParser: markers, speaker labels, empty replies, and fuzzing."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from interplay.generator.dialogue.parsing import ParsedReply, ReplyParser

P = ReplyParser()
BRACKET_ACCEPT = re.compile(r"[\[<(]\s*accept\s*[\]>)]", re.IGNORECASE)
BRACKET_QUIT = re.compile(r"[\[<(]\s*quit\s*[\]>)]", re.IGNORECASE)

# ---------------------------------------------------------------------------------------------------- markers


@pytest.mark.parametrize("raw", [
    "Heat (1995) it is! [ACCEPT]",
    "Heat (1995) it is! [accept]",
    "Heat (1995) it is! <ACCEPT>",
    "Heat (1995) it is! (Accept)",
    "Heat (1995) it is! [ ACCEPT ]",
    "Heat (1995) it is! ACCEPT",
    "[ACCEPT] Heat (1995) it is!",
])
def test_accept_markers(raw: str):
    reply = P.user_reply(raw)
    assert reply.is_accept and not reply.is_quit
    assert reply.text == "Heat (1995) it is!"
    assert "accept" not in reply.text.lower()


def test_accept_marker_alone():
    reply = P.user_reply("[ACCEPT]")
    assert reply == ParsedReply("", is_accept=True, is_quit=False, note=None)


def test_marker_in_the_middle_leaves_single_spaces():
    assert P.user_reply("I pick Heat [ACCEPT] tonight").text == "I pick Heat tonight"


@pytest.mark.parametrize("raw", ["I accept that", "I Accept your offer", "ACCEPTED, almost", "acceptable",
                                 "unACCEPTable"])
def test_plain_words_are_not_accept(raw: str):
    reply = P.user_reply(raw)
    assert not reply.is_accept
    assert reply.text == raw


@pytest.mark.parametrize("raw", ["Nothing fits, bye [QUIT]", "Nothing fits, bye [quit]", "Nothing fits, bye <QUIT>",
                                 "Nothing fits, bye QUIT"])
def test_quit_markers(raw: str):
    reply = P.user_reply(raw)
    assert reply.is_quit and not reply.is_accept
    assert reply.text == "Nothing fits, bye"


@pytest.mark.parametrize("raw", ["I quit watching horror", "I'll quit now"])
def test_plain_words_are_not_quit(raw: str):
    reply = P.user_reply(raw)
    assert not reply.is_quit and reply.text == raw


@pytest.mark.parametrize("raw", ["Heat! [ACCEPT] [QUIT]", "[QUIT] Heat! [ACCEPT]", "Heat! <quit> ACCEPT"])
def test_accept_wins_over_quit(raw: str):
    reply = P.user_reply(raw)
    assert reply.is_accept and not reply.is_quit
    assert reply.text == "Heat!"  # both markers stripped


def test_recommender_reply_keeps_markers():
    reply = P.recommender_reply("Try Heat (1995). [ACCEPT]")
    assert not reply.is_accept and reply.text == "Try Heat (1995). [ACCEPT]"


def test_custom_markers():
    p = ReplyParser("<<yes>>", "<<no>>")
    yes = p.user_reply("Great, Heat it is <<yes>>")
    assert yes.is_accept and yes.text == "Great, Heat it is"
    no = p.user_reply("Bye <<no>>")
    assert no.is_quit and not no.is_accept and no.text == "Bye"
    assert p.user_reply("Great <<yes>> <<no>>").is_accept
    # the default markers mean nothing to this parser
    plain = p.user_reply("Heat [ACCEPT]")
    assert not plain.is_accept and plain.text == "Heat [ACCEPT]"


def test_custom_marker_word_in_capitals_is_not_a_marker():
    reply = ReplyParser("<<yes>>", "<<no>>").user_reply("NO, not that one. Something funnier?")
    assert not reply.is_quit
    assert reply.text == "NO, not that one. Something funnier?"


# ----------------------------------------------------------------------------------------- labels and cuts


@pytest.mark.parametrize("continuation", ["\nRecommender: How about Heat (1995)?", "\n**Assistant**: Heat?",
                                          "\r\nrecommender : Heat?", "\n  User: and me again"])
def test_other_speaker_is_cut(continuation: str):
    reply = P.user_reply("I want something funny." + continuation)
    assert reply.text == "I want something funny."
    assert reply.note and "cut" in reply.note


def test_recommender_reply_cut_at_user_line():
    reply = P.recommender_reply("Try Heat (1995).\nUser: sounds good [ACCEPT]")
    assert reply.text == "Try Heat (1995)."
    assert reply.note and "cut" in reply.note
    assert not reply.is_accept  # what the recommender invented for the user is not the user's accept


def test_cut_removes_invented_accept():
    reply = P.user_reply("Any thrillers?\nRecommender: Heat (1995).\nUser: [ACCEPT]")
    assert not reply.is_accept and reply.text == "Any thrillers?"


@pytest.mark.parametrize("raw", ["User: I want a comedy.", "  user:I want a comedy.", "**User**: I want a comedy.",
                                 "Me: I want a comedy."])
def test_leading_label_removed(raw: str):
    reply = P.user_reply(raw)
    assert reply.text == "I want a comedy."
    assert reply.note is None


def test_leading_label_removed_from_recommender():
    assert P.recommender_reply("Recommender: Try Heat (1995).").text == "Try Heat (1995)."


def test_label_word_inside_sentence_kept():
    raw = "As a user: I like noir."  # not at the start, not after a newline
    assert P.user_reply(raw).text == raw


def test_own_label_after_leading_newline():
    reply = P.user_reply("\nUser: I want a comedy.")
    assert reply.text == "I want a comedy."


@pytest.mark.parametrize("raw", ["", "   ", "\n\n", "\t \r\n", "User:", "User:   \n", "\nSystem: hi"])
def test_empty_replies(raw: str):
    for reply in (P.user_reply(raw), P.recommender_reply(raw)):
        assert reply.text == ""
        assert reply.note == "empty reply"
        assert not reply.is_accept and not reply.is_quit


def test_whitespace_trimmed():
    assert P.recommender_reply("  Try Heat (1995).  \n").text == "Try Heat (1995)."


# -------------------------------------------------------------------------------------------------- fuzzing

FRAGMENTS = st.sampled_from(["[ACCEPT]", "[accept]", "<ACCEPT>", "ACCEPT", "[QUIT]", "QUIT", "\n", "\r\n",
                             "User:", "\nRecommender:", "**Assistant**:", " ", "Heat (1995)", "é", "🎬", "\u2028"])
TEXT = st.one_of(st.text(), st.lists(st.one_of(st.text(max_size=8), FRAGMENTS), max_size=12).map("".join))


def _check(reply: ParsedReply, raw: str) -> None:
    assert isinstance(reply, ParsedReply)
    assert isinstance(reply.text, str)
    assert reply.text == reply.text.strip()
    assert not (reply.is_accept and reply.is_quit)
    assert (reply.text == "") == (reply.note == "empty reply") or reply.is_accept or reply.is_quit
    assert len(reply.text) <= len(raw)


@settings(max_examples=400, deadline=None)
@given(TEXT)
@example("[ACCEPT]\n[ACCEPT]")
@example("User: [accept] <Accept> ( ACCEPT )")
def test_fuzz_user_reply(raw: str):
    reply = P.user_reply(raw)
    _check(reply, raw)
    assert not BRACKET_ACCEPT.search(reply.text)
    assert not BRACKET_QUIT.search(reply.text)
    assert "[ACCEPT]" not in reply.text


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_fuzz_recommender_reply(raw: str):
    reply = P.recommender_reply(raw)
    _check(reply, raw)
    assert not reply.is_accept and not reply.is_quit
    assert "\nRecommender:" not in reply.text and "\nUser:" not in reply.text


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_fuzz_accept_appended_is_detected(prefix: str, suffix: str):
    reply = P.user_reply(prefix.replace("\n", " ") + " [ACCEPT] " + suffix.replace("\n", " "))
    assert reply.is_accept and not reply.is_quit
    assert "[ACCEPT]" not in reply.text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_fuzz_custom_markers(body: str):
    p = ReplyParser("<<yes>>", "<<no>>")
    body = body.replace("\n", " ")
    reply = p.user_reply(body + " <<yes>>")
    assert reply.is_accept and "<<yes>>" not in reply.text
    quit_reply = p.user_reply(body + " <<no>>")
    assert quit_reply.is_quit or quit_reply.is_accept  # accept wins if the body itself accepts
    assert "<<no>>" not in quit_reply.text


@pytest.mark.parametrize("raw", ["ok [ACC[ACCEPT]EPT]", "ok [ACC[QUIT]EPT]", "ok <accept QUIT >"])
def test_nested_markers_leave_no_marker(raw: str):
    assert not BRACKET_ACCEPT.search(P.user_reply(raw).text)


def test_a_reply_opening_with_the_other_speakers_label_is_empty():
    # The user simulator writing the recommender's line is not a user turn; the recommender's own label is fine.
    assert P.user_reply("\nRecommender: try Heat (1995)").text == ""
    assert P.recommender_reply("\nRecommender: try Heat (1995)").text == "try Heat (1995)"
    assert P.recommender_reply("User: I want a comedy").text == ""
