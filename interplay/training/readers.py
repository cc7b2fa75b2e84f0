"""Reading the files of a training corpus: Parquet shards or files, JSON arrays or objects of records, JSONL;
and telling the format from the content (corpus, pearl or messages)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from interplay.training.errors import TrainingInputError


class Unreadable(str):
    """A record that could not even be read (the reason it is skipped)."""


def json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """A JSON array or object of records, or JSONL: (index, record) pairs, Unreadable(reason) for a bad line."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).lstrip()
    whole = None
    if head[:1] in (b"[", b"{") and path.suffix != ".jsonl":
        try:
            whole = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            whole = None  # not one JSON document: JSONL (whose first line is an object)
    if isinstance(whole, list):
        yield from enumerate(whole)
        return
    if isinstance(whole, dict):
        if "dialogue" in whole or "messages" in whole:
            yield 0, whole
        else:  # {id: record}
            for i, (key, value) in enumerate(whole.items()):
                if isinstance(value, dict):
                    value = {"id": key, **value}
                yield i, value
        return
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            if not raw.strip():
                continue
            try:
                yield i, json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield i, Unreadable("invalid UTF-8")
            except ValueError:
                yield i, Unreadable("invalid JSON")


def parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob("shard-*.parquet")) or sorted(path.glob("*.parquet"))
    return [path]


def detect_format(path: Path) -> str:
    files = parquet_files(path) if path.is_dir() or path.suffix == ".parquet" else []
    if path.is_dir() and not files:
        raise TrainingInputError(f"{path}: a directory without Parquet files")
    if files:
        names = set(pq.read_schema(files[0]).names)
        if {"messages", "outcome", "turns"} <= names:
            return "corpus"
        if "messages" in names:
            return "messages"
        if "dialogue" in names:
            return "pearl"
        raise TrainingInputError(f"{files[0]}: no `messages` or `dialogue` column; cannot tell its format")
    with open(path, "rb") as f:  # the first record's keys are near the start: no need to parse a big file
        head = f.read(1 << 16)
    found = {fmt: head.find(key) for key, fmt in ((b'"dialogue"', "pearl"), (b'"messages"', "messages"))}
    found = {fmt: pos for fmt, pos in found.items() if pos >= 0}
    if found:  # the key of the first record
        return min(found, key=found.get)
    raise TrainingInputError(f"{path}: the first record has no `dialogue` (PEARL) or `messages` field; "
                             "pass --format to say what it is")


def parquet_rows(files: list[Path], columns: list[str] | None) -> Iterator[dict[str, Any]]:
    for f in files:
        pf = pq.ParquetFile(f)
        cols = [c for c in columns if c in pf.schema_arrow.names] if columns else None
        for batch in pf.iter_batches(batch_size=2048, columns=cols):
            yield from batch.to_pylist()
