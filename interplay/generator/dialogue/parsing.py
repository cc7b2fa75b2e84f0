"""Parsing model replies: markers, stray speaker labels, empty replies. Never raises; problems become notes.

Small models often keep writing the other side of the dialogue ("Recommender: ...") or prefix their own line
with a label; both are cut, and the raw text is kept beside the clean text in the corpus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_OWN_LABELS = {"user": r"(?:user|seeker|customer|you|me)", "recommender": r"(?:recommender|assistant|bot|agent)"}
_LABELS = r"(?:user|seeker|customer|you|me|recommender|assistant|system|bot|agent)"
_OWN_LABEL = {role: re.compile(rf"^\s*\**{labels}\**\s*:\s*", re.IGNORECASE) for role, labels in _OWN_LABELS.items()}
_NEXT_SPEAKER = re.compile(rf"(?:^|\n)\s*\**{_LABELS}\**\s*:", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ParsedReply:
    text: str              # what is stored and shown to the other role
    is_accept: bool = False
    is_quit: bool = False
    note: str | None = None  # why the reply needed repair or could not be used


def _marker_pattern(marker: str) -> re.Pattern[str]:
    # "[ACCEPT]" -> the word ACCEPT in any bracket style and case, or bare in capitals; a plain "I accept" in a
    # sentence is not a marker.
    word = re.sub(r"\W", "", marker) or marker
    bracketed = rf"[\[<(]\s*{re.escape(word)}\s*[\]>)]"
    # Short words in capitals ("NO", "YES") are ordinary speech, so only longer ones count bare.
    bare = rf"|(?-i:\b{re.escape(word.upper())}\b)" if len(word) >= 4 else ""
    return re.compile(rf"{bracketed}{bare}|{re.escape(marker)}", re.IGNORECASE)


class ReplyParser:
    def __init__(self, accept_marker: str = "[ACCEPT]", quit_marker: str = "[QUIT]"):
        self._accept = _marker_pattern(accept_marker)
        self._quit = _marker_pattern(quit_marker)

    def clean(self, raw: str, role: str) -> tuple[str, str | None]:
        # The model's own label goes first (also after leading blank lines); then everything from the first line
        # that another speaker's label opens is cut, also when the reply starts with one.
        text = _OWN_LABEL[role].sub("", raw.replace("\r\n", "\n").strip(), count=1)
        note = None
        cut = _NEXT_SPEAKER.search(text)
        if cut:
            text, note = text[:cut.start()], "cut at another speaker's line"
        return text.strip(), note

    def user_reply(self, raw: str) -> ParsedReply:
        text, note = self.clean(raw, "user")
        is_accept = bool(self._accept.search(text))
        is_quit = bool(self._quit.search(text)) and not is_accept
        # Remove to a fixed point: removing one marker can join the pieces of another ("[ACC[ACCEPT]EPT]").
        previous = None
        while previous != text:
            previous, text = text, self._quit.sub("", self._accept.sub("", text))
        text = re.sub(r"[ \t]{2,}", " ", text).strip()
        if not text and not (is_accept or is_quit):
            return ParsedReply("", note="empty reply")
        return ParsedReply(text, is_accept, is_quit, note)

    def recommender_reply(self, raw: str) -> ParsedReply:
        text, note = self.clean(raw, "recommender")
        if not text:
            return ParsedReply("", note="empty reply")
        return ParsedReply(text, note=note)
