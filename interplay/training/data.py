"""Dialogue corpora for training, in three formats, read into one Dialogue type; bad records are counted, not fatal.

  corpus    this project's output: a directory with manifest.json and shard-*.parquet (or one shard); filtered
            by outcome and minimum number of turns
  pearl     PEARL-style JSON (a list of records, or JSONL): `dialogue` is a list of "Seeker: ..." /
            "Recommender: ..." strings; `user_persona` (reviews) and the ground-truth movie (`gt_movie_title`,
            or `gt_abstract.title`) where present
  messages  JSONL or Parquet of {messages: [{role: user|assistant, content}], preference_summary,
            target_attributes}; `interplay summarize` writes this format

A record with missing fields, an empty dialogue, a speaker that is neither side, an empty turn or two turns of
the same side in a row is skipped and counted by reason. A recommender turn that opens a dialogue is dropped (the
generator's protocol has the user first) and counted as a repair.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interplay.generator.inputs.seeds import _normalize_attributes
from interplay.training.errors import TrainingInputError
from interplay.training.readers import Unreadable, detect_format, json_records, parquet_files, parquet_rows

SPEAKERS = {"user": "user", "seeker": "user", "assistant": "recommender", "recommender": "recommender"}
ENDINGS = {"accepted": "accept", "accept": "accept", "gave_up": "quit", "quit": "quit"}
_LABEL = re.compile(r"^\s*([A-Za-z_]+)\s*:\s?(.*)$", re.DOTALL)
CORPUS_COLUMNS = ["conversation_id", "messages", "outcome", "preference_summary", "target_attributes",
                  "target_item_id"]


@dataclass(frozen=True, slots=True)
class Dialogue:
    dialogue_id: str
    turns: tuple[tuple[str, str], ...]      # (speaker "user" | "recommender", text); the user first, alternating
    preference_summary: str | None = None
    target_attributes: dict[str, list[str]] | None = None
    ending: str | None = None               # "accept" | "quit" | None: how the user's last turn ended it
    target_item: str | None = None          # ground truth, if known; never rendered into a prompt
    persona: str | None = None              # PEARL's raw persona (reviews), input of `interplay summarize`


@dataclass
class LoadStats:
    num_records: int = 0
    skipped: Counter = field(default_factory=Counter)    # malformed records, by reason
    filtered: Counter = field(default_factory=Counter)   # well-formed, left out by the filter
    repaired: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"num_records": self.num_records, "skipped": dict(self.skipped), "filtered": dict(self.filtered),
                "repaired": dict(self.repaired)}


# ------------------------------------------------------------------------------------------ record checking


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _check_turns(turns: list[tuple[str, str]], ending: str | None, stats: LoadStats) -> tuple | str:
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


def _attributes(value: Any) -> dict[str, list[str]] | None | str:
    if value is None or (isinstance(value, (list, dict, str)) and not value):
        return None
    attrs = _normalize_attributes(value)  # the seeds' own reading, so both accept the same shapes
    if attrs == "empty target_attributes":
        return None  # missing: only the user simulator needs them, and its examples count the lack
    return attrs  # a dict, or a skip reason


def _dialogue(dialogue_id: str, turns: list[tuple[str, str]], row: dict[str, Any], ending: str | None,
              stats: LoadStats, *, target_item: str | None = None, persona: str | None = None) -> Dialogue | str:
    checked = _check_turns(turns, ending, stats)
    if isinstance(checked, str):
        return checked
    attrs = _attributes(row.get("target_attributes"))
    if isinstance(attrs, str):
        return attrs
    summary = row.get("preference_summary")
    if summary is not None and not isinstance(summary, str):
        return "bad preference_summary"
    return Dialogue(dialogue_id, checked, _text(summary), attrs, ending, target_item, persona)


def _message_turns(messages: Any) -> list[tuple[str, str]] | str:
    if not isinstance(messages, list):
        return "missing messages"
    turns = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return "message without role"
        role = m["role"].strip().lower()
        if role == "system":  # a training prompt of another tool: ours are rendered here
            continue
        if role not in SPEAKERS:
            return f"unknown speaker {m['role']!r}"
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            return "message content is not text"
        turns.append((SPEAKERS[role], (content or "").strip()))
    return turns


def corpus_record(row: dict[str, Any], stats: LoadStats) -> Dialogue | str:
    turns = _message_turns(row.get("messages"))
    if isinstance(turns, str):
        return turns
    ending = ENDINGS.get(row.get("outcome") or "")
    return _dialogue(str(row.get("conversation_id")), turns, row, ending, stats,
                     target_item=_text(row.get("target_item_id")))


def messages_record(row: Any, index: int, stats: LoadStats) -> Dialogue | str:
    if not isinstance(row, dict):
        return "record is not an object"
    turns = _message_turns(row.get("messages"))
    if isinstance(turns, str):
        return turns
    ending = ENDINGS.get(str(row.get("ending") or row.get("outcome") or "").lower())
    did = row.get("dialogue_id", row.get("id", index))
    return _dialogue(str(did), turns, row, ending, stats, target_item=_text(row.get("target_item")),
                     persona=_text(row.get("persona")))


def _persona(value: Any) -> str | None:
    if isinstance(value, list):  # a list of reviews, or of {title, abstract}
        parts = [v.get("abstract") if isinstance(v, dict) else v for v in value]
        value = "\n\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
    return _text(value)


def pearl_record(row: Any, index: int, stats: LoadStats) -> Dialogue | str:
    if not isinstance(row, dict):
        return "record is not an object"
    lines = row.get("dialogue")
    if lines is None:
        return "missing dialogue"
    if not isinstance(lines, list):
        return "dialogue is not a list"
    turns = []
    for line in lines:
        match = _LABEL.match(line) if isinstance(line, str) else None
        if not match:
            return "turn without a speaker label"
        speaker = SPEAKERS.get(match.group(1).lower())
        if speaker is None:
            return f"unknown speaker {match.group(1)!r}"
        turns.append((speaker, match.group(2).strip()))
    gt = row.get("gt_movie_title") or row.get("gt_movie")
    if gt is None and isinstance(row.get("gt_abstract"), dict):
        gt = row["gt_abstract"].get("title")
    did = row.get("data_id", row.get("dialogue_id", row.get("id", index)))
    return _dialogue(str(did), turns, row, ENDINGS.get(str(row.get("ending") or "").lower()), stats,
                     target_item=_text(gt), persona=_persona(row.get("user_persona")))


class Filtered(str):
    """Why a well-formed record was left out (a skip reason is a plain str)."""


def _records(path: Path, fmt: str, stats: LoadStats, outcomes: set[str] | None) -> Iterator[Dialogue | str]:
    if fmt == "corpus":
        for row in parquet_rows(parquet_files(path), CORPUS_COLUMNS):
            if outcomes is not None and row.get("outcome") not in outcomes:
                yield Filtered(f"outcome {row.get('outcome')}")
            else:
                yield corpus_record(row, stats)
        return
    parse = pearl_record if fmt == "pearl" else messages_record
    if path.is_dir() or path.suffix == ".parquet":
        for i, row in enumerate(parquet_rows(parquet_files(path), None)):
            yield parse(row, i, stats)
    else:
        for i, row in json_records(path):
            yield str(row) if isinstance(row, Unreadable) else parse(row, i, stats)


def load_dialogues(paths: Iterable[str | Path], *, fmt: str = "auto", outcomes: list[str] | None = None,
                   min_turns: int = 1, max_dialogues: int | None = None, keep_persona: bool = False,
                   ) -> tuple[list[Dialogue], LoadStats]:
    """All usable dialogues of `paths`, and what was skipped, filtered out or repaired (by reason)."""
    stats, dialogues = LoadStats(), []
    for raw_path in paths:
        path = Path(raw_path).expanduser()
        if not path.exists():
            raise TrainingInputError(f"training data {str(raw_path)!r} does not exist")
        file_fmt = detect_format(path) if fmt == "auto" else fmt
        for item in _records(path, file_fmt, stats, set(outcomes) if outcomes is not None else None):
            stats.num_records += 1
            if isinstance(item, Filtered):
                stats.filtered[item] += 1
                continue
            if isinstance(item, str):
                stats.skipped[item] += 1
                continue
            if len(item.turns) < min_turns:
                stats.filtered[f"fewer than {min_turns} turns"] += 1
                continue
            dialogues.append(item if keep_persona or item.persona is None else _without_persona(item))
            if max_dialogues is not None and len(dialogues) >= max_dialogues:
                return dialogues, stats
    return dialogues, stats


def no_usable(what: str, paths: Iterable[str], num_records: int, *reasons: Counter) -> TrainingInputError:
    counts: Counter = Counter()
    for r in reasons:
        counts.update(r)
    why = ", ".join(f"{reason}: {n}" for reason, n in counts.most_common())
    return TrainingInputError(f"no usable {what} in {', '.join(map(str, paths))} ({num_records} records"
                              + (f"; {why}" if why else "") + ")")


def load_training_data(paths: list[str], *, fmt: str, outcomes: list[str] | None, min_turns: int,
                       max_dialogues: int | None) -> tuple[list[Dialogue], LoadStats]:
    """load_dialogues, and one clear error when nothing is usable (before any model is loaded)."""
    dialogues, stats = load_dialogues(paths, fmt=fmt, outcomes=outcomes, min_turns=min_turns,
                                      max_dialogues=max_dialogues)
    if not dialogues:
        raise no_usable("dialogues", paths, stats.num_records, stats.skipped, stats.filtered)
    return dialogues, stats


def _without_persona(d: Dialogue) -> Dialogue:
    return Dialogue(d.dialogue_id, d.turns, d.preference_summary, d.target_attributes, d.ending, d.target_item)
