"""Reading PEARL as released (train.json / valid.json / test.json) and PEARL's generator output.

A record: `data_id`, `user_persona` (three reviews, each "[Like] ...\\n[Dislike] ...", joined by a blank line),
`seen_movie_titles` (the reviewed titles, in order), `gt_movie_title` ("Title (Year)"), `gt_genre`, `gt_director`,
`gt_cast`, `gt_abstract` ("Title: ...\\nGenre: ...") and `dialogue` ("Seeker: ..." / "Recommender: ..." lines;
PEARL's generator writes the same under `prediction`).

  - acceptance: a dialogue that ends on the seeker's turn after the recommender named the ground-truth movie
    (with or without its year) ended with the seeker accepting it; "[EOD]" marks an ending, never user text
  - target attributes: gt_genre, gt_director and gt_cast, as they are (no model needed)
  - the fixed opening pair every dialogue starts with is kept as context and never trained on
  - the persona (reviews headed by their titles) is what `interplay summarize` writes the summary from
"""

from __future__ import annotations

import re
from typing import Any

from interplay.common.titles import mentions
from interplay.training.records import ENDINGS, SPEAKERS, Dialogue, LoadStats, make_dialogue, text_or_none

OPENING = "Hi there! I'm in the mood to watch a movie. Can you recommend something?"
_LABEL = re.compile(r"^\s*([A-Za-z_]+)\s*:\s?(.*)$", re.DOTALL)
_EOD = re.compile(r"\s*\[EOD\]\s*", re.IGNORECASE)
_ABSTRACT_TITLE = re.compile(r"^\s*Title\s*:\s*(.+?)\s*$", re.MULTILINE)


def _split(value: Any) -> list[str]:
    if isinstance(value, list):
        return [v.strip() for v in value if isinstance(v, str) and v.strip()]
    if isinstance(value, str):
        return [v.strip() for v in re.split(r"[,|;]", value) if v.strip()]
    return []


def pearl_attributes(row: dict[str, Any]) -> dict[str, list[str]] | None:
    attrs = {name: _split(row.get(key)) for name, key in (("genres", "gt_genre"), ("director", "gt_director"),
                                                           ("cast", "gt_cast"))}
    return {name: values for name, values in attrs.items() if values} or None


def ground_truth(row: dict[str, Any]) -> str | None:
    gt = text_or_none(row.get("gt_movie_title")) or text_or_none(row.get("gt_movie"))
    abstract = row.get("gt_abstract")
    if gt is None and isinstance(abstract, dict):  # an older, pre-release shape
        gt = text_or_none(abstract.get("title"))
    if gt is None and isinstance(abstract, str) and (m := _ABSTRACT_TITLE.search(abstract)):
        gt = m.group(1)
    return gt


def persona(row: dict[str, Any]) -> str | None:
    """The reviews, each headed by the title it reviews when `seen_movie_titles` lines up with them."""
    value = row.get("user_persona")
    if isinstance(value, list):  # a list of reviews, or of {title, abstract}
        parts = [v.get("abstract") if isinstance(v, dict) else v for v in value]
        value = "\n\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
    value = text_or_none(value)
    titles = _split(row.get("seen_movie_titles")) if isinstance(row.get("seen_movie_titles"), list) else []
    if value is None or not titles:
        return value
    reviews = [r.strip() for r in re.split(r"\n\s*\n", value) if r.strip()]
    if len(reviews) == len(titles):
        return "\n\n".join(f"{title}:\n{review}" for title, review in zip(titles, reviews))
    return f"Movies reviewed: {', '.join(titles)}.\n\n{value}"


def _turns(lines: list[Any]) -> list[tuple[str, str]] | str:
    turns = []
    for line in lines:
        match = _LABEL.match(line) if isinstance(line, str) else None
        if not match:
            return "turn without a speaker label"
        speaker = SPEAKERS.get(match.group(1).lower())
        if speaker is None:
            return f"unknown speaker {match.group(1)!r}"
        turns.append((speaker, _EOD.sub(" ", match.group(2)).strip()))
    return turns


def _ending(turns: list[tuple[str, str]], target: str | None) -> str | None:
    if not turns or turns[-1][0] != "user" or target is None:
        return None
    recommended = any(speaker == "recommender" and mentions(text, target) for speaker, text in turns[:-1])
    return "accept" if recommended else None


def pearl_record(row: Any, index: int, stats: LoadStats) -> Dialogue | str:
    if not isinstance(row, dict):
        return "record is not an object"
    lines = row.get("dialogue", row.get("prediction"))
    if lines is None:
        return "missing dialogue"
    if not isinstance(lines, list):
        return "dialogue is not a list"
    turns = _turns(lines)
    if isinstance(turns, str):
        return turns
    if len(turns) > 1 and turns[-1] == ("user", "") and turns[-2][0] == "user":
        turns = turns[:-1]  # "[EOD]" on a line of its own after the seeker's last words
    target = ground_truth(row)
    explicit = str(row.get("ending") or row.get("outcome") or "").lower()  # written by `interplay export`
    ending = ENDINGS.get(explicit) if explicit else _ending(turns, target)
    if turns and turns[-1] == ("user", "") and not ending:
        turns = turns[:-1]  # a closing "[EOD]" alone: nothing was said
        stats.repaired["dropped an empty closing turn"] += 1
    num_context = 2 if len(turns) > 2 and turns[0] == ("user", OPENING) and turns[1][0] == "recommender" else 0
    did = row.get("data_id", row.get("dialogue_id", row.get("id", index)))
    return make_dialogue(str(did), turns, row, ending, stats, target_item=target, persona=persona(row),
                         attributes=pearl_attributes(row), num_context_turns=num_context)
