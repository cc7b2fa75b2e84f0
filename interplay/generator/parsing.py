"""Parsing model replies: markers, stray speaker labels, empty replies. Never raises; problems become notes.

Small models often keep writing the other side of the dialogue ("Recommender: ...") or prefix their own line
with a label; both are cut, and the raw text is kept beside the clean text in the corpus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LABELS = r"(?:user|seeker|customer|you|me|recommender|assistant|system|bot|agent)"
_LEADING_LABEL = re.compile(rf"^\s*\**{_LABELS}\**\s*:\s*", re.IGNORECASE)
_NEXT_SPEAKER = re.compile(rf"\n\s*\**{_LABELS}\**\s*:", re.IGNORECASE)


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
    return re.compile(rf"{bracketed}|(?-i:\b{re.escape(word.upper())}\b)|{re.escape(marker)}", re.IGNORECASE)


class ReplyParser:
    def __init__(self, accept_marker: str = "[ACCEPT]", quit_marker: str = "[QUIT]"):
        self._accept = _marker_pattern(accept_marker)
        self._quit = _marker_pattern(quit_marker)

    def clean(self, raw: str) -> tuple[str, str | None]:
        text = raw.replace("\r\n", "\n")
        note = None
        cut = _NEXT_SPEAKER.search(text)
        if cut:
            text, note = text[:cut.start()], "cut at another speaker's line"
        text = _LEADING_LABEL.sub("", text, count=1).strip()
        return text, note

    def user_reply(self, raw: str) -> ParsedReply:
        text, note = self.clean(raw)
        is_accept = bool(self._accept.search(text))
        is_quit = bool(self._quit.search(text)) and not is_accept
        text = self._quit.sub("", self._accept.sub("", text))
        text = re.sub(r"[ \t]{2,}", " ", text).strip()
        if not text and not (is_accept or is_quit):
            return ParsedReply("", note="empty reply")
        return ParsedReply(text, is_accept, is_quit, note)

    def recommender_reply(self, raw: str) -> ParsedReply:
        text, note = self.clean(raw)
        if not text:
            return ParsedReply("", note="empty reply")
        return ParsedReply(text, note=note)
