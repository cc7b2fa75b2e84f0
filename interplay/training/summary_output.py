"""The output of `interplay summarize`: a directory of Parquet parts in the `messages` format, resumable.

    OUT/part-00000.parquet ...   `part_size` dialogues each, in input order (the last may hold fewer)
    OUT/_progress.json           what the parts hold and from which input; `complete` once every part is written

Each part is written under a temporary name and renamed into place, then `_progress.json` is replaced: a crash
loses at most the part being written, and a rerun with the same input skips the dialogues the parts already hold.
Readers of Parquet datasets (pyarrow, pandas, `datasets`, `interplay train`) skip names that start with "_" or
".", so the directory reads as one table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from interplay.generator.dialogue.prompts import corpus_messages
from interplay.generator.inputs.seeds import ATTRIBUTES_TYPE, attributes_to_arrow
from interplay.generator.output.records import MESSAGE_TYPE
from interplay.training.errors import TrainingInputError
from interplay.training.records import Dialogue

PROGRESS = "_progress.json"
SCHEMA = pa.schema([
    pa.field("dialogue_id", pa.string()), pa.field("messages", pa.list_(MESSAGE_TYPE)),
    pa.field("preference_summary", pa.string()), pa.field("target_attributes", ATTRIBUTES_TYPE),
    pa.field("ending", pa.string()), pa.field("target_item", pa.string()), pa.field("summary_model", pa.string()),
    pa.field("num_context_turns", pa.int32()),
])


def _rows(dialogues: list[Dialogue], model: str) -> list[dict[str, Any]]:
    return [{"dialogue_id": d.dialogue_id, "messages": corpus_messages(d.turns),
             "preference_summary": d.preference_summary,
             "target_attributes": attributes_to_arrow(d.target_attributes) if d.target_attributes else None,
             "ending": d.ending, "target_item": d.target_item, "summary_model": model,
             "num_context_turns": d.num_context_turns} for d in dialogues]


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class SummaryOutput:
    """Opens (or resumes) the output directory; `write_part` adds the next part."""

    def __init__(self, path: Path, *, inputs: dict[str, Any], part_size: int, overwrite: bool):
        self.path, self.inputs, self.part_size = path, inputs, part_size
        progress = None if overwrite else self._read_progress()
        if overwrite:
            self._clear()
        elif progress is not None and (progress.get("inputs") != inputs or progress.get("part_size") != part_size):
            raise TrainingInputError(f"{path} holds summaries of other input or another --part-size "
                                     f"({progress.get('inputs')}, part size {progress.get('part_size')}); "
                                     "pass --overwrite to start over")
        self.parts: list[dict[str, Any]] = list(progress["parts"]) if progress else []
        self.complete = bool(progress and progress.get("complete"))
        path.mkdir(parents=True, exist_ok=True)

    def _read_progress(self) -> dict[str, Any] | None:
        if self.path.is_file():
            raise TrainingInputError(f"{self.path} is a file; summaries are written to a directory of parts "
                                     "(pass --overwrite to replace the file)")
        if not self.path.exists():
            return None
        try:
            return json.loads((self.path / PROGRESS).read_text())
        except FileNotFoundError:
            if any(self.path.iterdir()):
                raise TrainingInputError(f"{self.path} exists and is not the output of `interplay summarize`; "
                                         "choose another --output") from None
            return None
        except (OSError, ValueError) as e:
            raise TrainingInputError(f"{self.path / PROGRESS} is unreadable ({e}); pass --overwrite to start "
                                     "over") from None

    def _clear(self) -> None:
        if self.path.is_file():
            self.path.unlink()
            return
        if not self.path.exists():
            return
        for p in self.path.iterdir():
            if p.name == PROGRESS or (p.name.startswith((".part-", "part-")) and ".parquet" in p.name):
                p.unlink()
            else:
                raise TrainingInputError(f"{self.path} holds {p.name}, which `interplay summarize` did not write; "
                                         "choose another --output")

    @property
    def num_done(self) -> int:
        return sum(part["num_dialogues"] for part in self.parts)

    def write_part(self, dialogues: list[Dialogue], model: str) -> None:
        name = f"part-{len(self.parts):05d}.parquet"
        tmp = self.path / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(_rows(dialogues, model), schema=SCHEMA), tmp, compression="zstd")
        os.replace(tmp, self.path / name)
        usable = sum(d.preference_summary is not None and bool(d.target_attributes) for d in dialogues)
        self.parts.append({"name": name, "num_dialogues": len(dialogues), "num_usable": usable})
        self._write_progress(complete=False)

    def finish(self, load: dict[str, Any]) -> None:
        self.complete = True
        self._write_progress(complete=True, load=load)

    def _write_progress(self, *, complete: bool, load: dict[str, Any] | None = None) -> None:
        progress = {"inputs": self.inputs, "part_size": self.part_size, "parts": self.parts, "complete": complete}
        if load is not None:
            progress["load"] = load
        _replace(self.path / PROGRESS, (json.dumps(progress, indent=2) + "\n").encode())
