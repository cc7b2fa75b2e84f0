"""The Dialogue every training format is read into, the load counters, and the checks all readers share.

A reader turns one record of its format into (speaker, text) turns plus what it knows (summary, attributes, how
the dialogue ended, the ground truth) and hands them to `make_dialogue`, which applies the same rules to every
format: the user first (a recommender opening is dropped and counted as a repair), turns alternate, no empty turn.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from interplay.generator.inputs.seeds import _normalize_attributes

SPEAKERS = {"user": "user", "seeker": "user", "human": "user", "assistant": "recommender",
            "recommender": "recommender", "gpt": "recommender", "agent": "recommender"}
ENDINGS = {"accepted": "accept", "accept": "accept", "gave_up": "quit", "quit": "quit"}
ENDING_NAMES = {"accept": "accepted", "quit": "gave_up", None: "unknown"}  # as data.json reports them


@dataclass(frozen=True, slots=True)
class Dialogue:
    dialogue_id: str
    turns: tuple[tuple[str, str], ...]      # (speaker "user" | "recommender", text); the user first, alternating
    preference_summary: str | None = None
    target_attributes: dict[str, list[str]] | None = None
    ending: str | None = None               # "accept" | "quit" | None: how the user's last turn ended it
    target_item: str | None = None          # ground truth, if known; never rendered into a prompt
    persona: str | None = None              # PEARL's raw persona (reviews), input of `interplay summarize`
    num_context_turns: int = 0              # leading turns shown as context, never trained on (PEARL's opening)


@dataclass
class LoadStats:
    num_records: int = 0
    skipped: Counter = field(default_factory=Counter)    # malformed records, by reason
    filtered: Counter = field(default_factory=Counter)   # well-formed, left out by the filter
    repaired: Counter = field(default_factory=Counter)
    endings: Counter = field(default_factory=Counter)    # of the dialogues read: accepted, gave_up, unknown

    @property
    def num_dialogues(self) -> int:
        return sum(self.endings.values())

    def as_dict(self) -> dict[str, Any]:
        return {"num_records": self.num_records, "num_dialogues": self.num_dialogues,
                "endings": {name: self.endings[name] for name in ("accepted", "gave_up", "unknown")},
                "skipped": dict(self.skipped), "filtered": dict(self.filtered), "repaired": dict(self.repaired)}

    def describe(self) -> str:
        """One line: what was read, how the dialogues ended, what was skipped."""
        e = self.endings
        line = (f"{self.num_records} records read, {self.num_dialogues} dialogues (accepted {e['accepted']}, "
                f"gave up {e['gave_up']}, unknown {e['unknown']})")
        for what, counts in (("skipped", self.skipped), ("filtered out", self.filtered)):
            if counts:
                line += f"; {what} {sum(counts.values())}: " + ", ".join(
                    f"{reason} {n}" for reason, n in counts.most_common())
        return line


def text_or_none(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def check_turns(turns: list[tuple[str, str]], ending: str | None, stats: LoadStats) -> tuple | str:
    """Validated (speaker, text) turns, or a skip reason."""
    if not turns:
        return "empty dialogue"
    if turns[0][0] == "recommender":
        turns = turns[1:]
        stats.repaired["dropped the recommender's opening turn"] += 1
        if not turns:
            return "empty dialogue"
    for i, (speaker, text) in enumerate(turns):
        if i and speaker == turns[i - 1][0]:
            return "non-alternating dialogue"
        # A final "[ACCEPT]" alone is stored as an empty user turn: the marker is its text.
        if not text and not (i == len(turns) - 1 and speaker == "user" and ending):
            return "empty turn"
    return tuple(turns)


def read_attributes(value: Any) -> dict[str, list[str]] | None | str:
    if value is None or (isinstance(value, (list, dict, str)) and not value):
        return None
    attrs = _normalize_attributes(value)  # the seeds' own reading, so both accept the same shapes
    if attrs == "empty target_attributes":
        return None  # missing: only the user simulator needs them, and its examples count the lack
    return attrs  # a dict, or a skip reason


def make_dialogue(dialogue_id: str, turns: list[tuple[str, str]], row: dict[str, Any], ending: str | None,
                  stats: LoadStats, *, target_item: str | None = None, persona: str | None = None,
                  attributes: dict[str, list[str]] | None = None, summary: str | None = None,
                  num_context_turns: int = 0) -> Dialogue | str:
    """The checked Dialogue, or why the record is skipped. `row`'s own preference_summary and target_attributes
    win over the ones a reader derived (`summary`, `attributes`): they are what an earlier export or
    `interplay summarize` wrote."""
    checked = check_turns(turns, ending, stats)
    if isinstance(checked, str):
        return checked
    num_context_turns -= len(turns) - len(checked)  # a dropped opening was context too
    attrs = read_attributes(row.get("target_attributes"))
    if isinstance(attrs, str):
        return attrs
    own_summary = row.get("preference_summary")
    if own_summary is not None and not isinstance(own_summary, str):
        return "bad preference_summary"
    return Dialogue(dialogue_id, checked, text_or_none(own_summary) or summary, attrs or attributes or None,
                    ending, target_item, persona, max(num_context_turns, 0))


def without_persona(d: Dialogue) -> Dialogue:
    return replace(d, persona=None)
