"""Most recent conversations failing: the sign of a cause no retry will fix (a sampling value the engine rejects
for every request, a broken adapter), where going on would only fill the failure log.

The run (run.py) adds each finished conversation; once at least MIN_FINISHED have finished and MAX_FAILED_SHARE
of the last WINDOW ended with outcome `error`, it starts no new conversation, and the command line exits 1
naming the most common error.
"""

from __future__ import annotations

import re
from collections import Counter, deque

WINDOW = 64             # finished conversations looked at
MIN_FINISHED = 16       # fewer than this say nothing yet
MAX_FAILED_SHARE = 0.8  # of the window
MAX_MESSAGE_CHARS = 160

# Errors read "<role> turn <n>: <Type>: <message>": one cause fails many conversations at different turns, with
# request ids and numbers in its message, so errors are grouped with the turn left out and numbers blanked.
_TURN = re.compile(r"^[\w ]*?\bturn \d+: ")
_NUMBER = re.compile(r"\d+")


def error_kind(error: str) -> str:
    return _NUMBER.sub("#", _TURN.sub("", error, count=1))


def shorten(text: str, max_chars: int = MAX_MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[:max_chars - 3] + "..."


class RecentFailures:
    """The last `window` finished conversations: which failed, and with what error."""

    def __init__(self, window: int = WINDOW, min_finished: int = MIN_FINISHED,
                 max_failed_share: float = MAX_FAILED_SHARE):
        self.min_finished, self.max_failed_share = min_finished, max_failed_share
        self._recent: deque[str | None] = deque(maxlen=window)  # the error, or None for a conversation that ended
        self.num_failed = 0                                    # errors in the window

    def add(self, error: str | None) -> None:
        """A conversation finished: `error` is its error when its outcome is `error`, else None."""
        if len(self._recent) == self._recent.maxlen and self._recent[0] is not None:
            self.num_failed -= 1  # about to fall out of the window
        self._recent.append(error)
        self.num_failed += error is not None

    @property
    def num_seen(self) -> int:
        return len(self._recent)

    @property
    def is_failing(self) -> bool:
        return self.num_seen >= self.min_finished and self.num_failed >= self.max_failed_share * self.num_seen

    def most_common(self) -> tuple[str, int]:
        """The most common error in the window (its latest wording) and how many conversations it ended."""
        kinds = Counter(error_kind(e) for e in self._recent if e is not None)
        if not kinds:
            return "", 0
        kind, count = kinds.most_common(1)[0]
        return next(e for e in reversed(self._recent) if e is not None and error_kind(e) == kind), count

    def describe(self) -> str:
        """One line: how many of the recent conversations failed, and the most common error."""
        error, count = self.most_common()
        return (f"{self.num_failed} of the last {self.num_seen} conversations failed, {count} of them with: "
                f"{shorten(error)}")
