"""Dialogue corpora for training, in six formats, read into one Dialogue type; bad records are counted, not fatal.

  corpus      this project's output: a directory with manifest.json and shard-*.parquet (or one shard); filtered
              by outcome and minimum number of turns
  pearl       PEARL as released (train.json, ...) and PEARL's generator output (formats/pearl.py)
  redial      ReDial's train_data.jsonl / test_data.jsonl (formats/redial.py)
  llm-redial  LLM-REDIAL's domain folders (formats/llm_redial.py)
  sharegpt    {conversations: [{from: human|gpt, value}]} JSONL or JSON (formats/chat.py)
  messages    JSONL or Parquet of {messages: [{role: user|assistant, content}], preference_summary,
              target_attributes}; `interplay summarize` writes this format

A record with missing fields, an empty dialogue, a speaker outside the two roles, an empty turn, an unresolvable
ReDial `@id` or two turns of the same side in a row is skipped and counted by reason. A recommender turn that
opens a dialogue is dropped (the generator's protocol has the user first) and counted as a repair.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path

from interplay.training.errors import TrainingInputError
from interplay.training.formats.chat import CORPUS_COLUMNS, corpus_record, messages_record, sharegpt_record
from interplay.training.formats.llm_redial import llm_redial_records
from interplay.training.formats.pearl import pearl_record
from interplay.training.formats.redial import AttributesOf, redial_record
from interplay.training.readers import Unreadable, detect_format, json_records, parquet_files, parquet_rows
from interplay.training.records import ENDING_NAMES, Dialogue, LoadStats, without_persona

__all__ = ["Dialogue", "LoadStats", "detect_format", "iter_dialogues", "load_dialogues", "load_training_data"]

RECORD_PARSERS: dict[str, Callable[..., Dialogue | str]] = {
    "pearl": pearl_record, "redial": redial_record, "sharegpt": sharegpt_record, "messages": messages_record}
# Formats whose target attributes can come from a catalog (matched on the accepted or recommended title).
USES_CATALOG = ("redial", "llm-redial")


class Filtered(str):
    """Why a well-formed record was left out (a skip reason is a plain str)."""


def catalog_attributes(path: str | Path) -> AttributesOf:
    """title -> that catalog item's attributes (None when no item has the title)."""
    from interplay.generator.inputs.catalog import Catalog

    catalog = Catalog.load(Path(path).expanduser())

    def attributes_of(title: str) -> dict[str, list[str]] | None:
        ids = catalog.ground(title)
        item = catalog.get(ids[0]) if ids else None
        return {k: list(v) for k, v in item.attributes.items()} or None if item else None

    return attributes_of


def _records(path: Path, fmt: str, stats: LoadStats, outcomes: set[str] | None,
             attributes_of: AttributesOf | None) -> Iterator[Dialogue | str]:
    if fmt == "corpus":
        for row in parquet_rows(parquet_files(path), CORPUS_COLUMNS):
            if outcomes is not None and row.get("outcome") not in outcomes:
                yield Filtered(f"outcome {row.get('outcome')}")
            else:
                yield corpus_record(row, stats)
        return
    if fmt == "llm-redial":
        yield from llm_redial_records(path, stats, attributes_of)
        return
    parse = RECORD_PARSERS[fmt]
    if fmt == "redial":
        parse = partial(parse, attributes_of=attributes_of)
    if path.is_dir() or path.suffix == ".parquet":
        for i, row in enumerate(parquet_rows(parquet_files(path), None)):
            yield parse(row, i, stats)
    else:
        for i, row in json_records(path):
            yield str(row) if isinstance(row, Unreadable) else parse(row, i, stats)


def iter_dialogues(paths: Iterable[str | Path], stats: LoadStats, *, fmt: str = "auto",
                   outcomes: list[str] | None = None, min_turns: int = 1, keep_persona: bool = False,
                   catalog: str | Path | None = None) -> Iterator[Dialogue]:
    """The usable dialogues of `paths`, in order, one at a time; `stats` counts what was read and left out."""
    paths = [Path(p).expanduser() for p in paths]
    for path in paths:  # every path is checked before the first record is read
        if not path.exists():
            raise TrainingInputError(f"training data {str(path)!r} does not exist")
    attributes_of = None
    for path in paths:
        file_fmt = detect_format(path) if fmt == "auto" else fmt
        if catalog is not None and attributes_of is None and file_fmt in USES_CATALOG:
            attributes_of = catalog_attributes(catalog)
        for item in _records(path, file_fmt, stats, set(outcomes) if outcomes is not None else None,
                             attributes_of):
            stats.num_records += 1
            if isinstance(item, Filtered):
                stats.filtered[item] += 1
            elif isinstance(item, str):
                stats.skipped[item] += 1
            elif len(item.turns) < min_turns:
                stats.filtered[f"fewer than {min_turns} turns"] += 1
            else:
                stats.endings[ENDING_NAMES[item.ending]] += 1
                yield item if keep_persona or item.persona is None else without_persona(item)


def load_dialogues(paths: Iterable[str | Path], *, fmt: str = "auto", outcomes: list[str] | None = None,
                   min_turns: int = 1, max_dialogues: int | None = None, keep_persona: bool = False,
                   catalog: str | Path | None = None) -> tuple[list[Dialogue], LoadStats]:
    """All usable dialogues of `paths`, and what was skipped, filtered out or repaired (by reason)."""
    stats, dialogues = LoadStats(), []
    for dialogue in iter_dialogues(paths, stats, fmt=fmt, outcomes=outcomes, min_turns=min_turns,
                                   keep_persona=keep_persona, catalog=catalog):
        dialogues.append(dialogue)
        if max_dialogues is not None and len(dialogues) >= max_dialogues:
            break
    return dialogues, stats


def no_usable(what: str, paths: Iterable[str], num_records: int, *reasons: Counter) -> TrainingInputError:
    counts: Counter = Counter()
    for r in reasons:
        counts.update(r)
    why = ", ".join(f"{reason}: {n}" for reason, n in counts.most_common())
    return TrainingInputError(f"no usable {what} in {', '.join(map(str, paths))} ({num_records} records"
                              + (f"; {why}" if why else "") + ")")


def load_training_data(paths: list[str], *, fmt: str, outcomes: list[str] | None, min_turns: int,
                       max_dialogues: int | None, catalog: str | None = None) -> tuple[list[Dialogue], LoadStats]:
    """load_dialogues, and one clear error when nothing is usable (before any model is loaded)."""
    dialogues, stats = load_dialogues(paths, fmt=fmt, outcomes=outcomes, min_turns=min_turns,
                                      max_dialogues=max_dialogues, catalog=catalog)
    if not dialogues:
        raise no_usable("dialogues", paths, stats.num_records, stats.skipped, stats.filtered)
    return dialogues, stats
