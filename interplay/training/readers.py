"""Reading the files of a training corpus: Parquet shards or files, JSON arrays or objects of records, JSONL;
and telling the format from the content: the keys of the first records, or the columns of a Parquet file."""

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
        if record_format(whole) is not None:
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


READABLE = ("corpus (an interplay output directory or shard), pearl, redial, llm-redial (a folder of domain "
            "folders, or one), sharegpt, messages")
# A record's format from its keys; ReDial records have `messages` too, so its own keys are looked at first.
SIGNATURES = (("redial", ("movieMentions", "initiatorWorkerId", "respondentWorkerId")),
              ("pearl", ("dialogue", "prediction")), ("sharegpt", ("conversations",)), ("messages", ("messages",)))


def record_format(keys: Any) -> str | None:
    for fmt, names in SIGNATURES:
        if any(name in keys for name in names):
            return fmt
    return None


def _unknown(path: Path, why: str) -> TrainingInputError:
    return TrainingInputError(f"{path}: {why}; readable formats: {READABLE} (pass --format to say which)")


def _head_records(path: Path, limit: int = 8) -> list[Any] | None:
    """The first records of a JSON array or JSONL file, parsed from its first 64 KiB (None: none fits)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).decode("utf-8", errors="replace").lstrip()
    decoder, records = json.JSONDecoder(), []
    if head.startswith("["):
        i = 1
        while len(records) < limit:
            while i < len(head) and head[i] in " \t\r\n,":
                i += 1
            try:
                record, i = decoder.raw_decode(head, i)
            except ValueError:
                break
            records.append(record)
    elif head.startswith("{"):
        try:
            whole, _ = decoder.raw_decode(head)
        except ValueError:
            whole = None
        if isinstance(whole, dict) and record_format(whole) is None \
                and all(isinstance(v, dict) for v in whole.values()):
            records = list(whole.values())[:limit]  # {id: record}
        else:
            for line in head.splitlines()[:limit]:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    break
            if not records and whole is not None:
                records = [whole]
    return records or None


def detect_format(path: Path) -> str:
    if path.is_dir() and not parquet_files(path):
        from interplay.training.formats.llm_redial import domain_folders

        if domain_folders(path):
            return "llm-redial"
        raise _unknown(path, "a directory without Parquet files or LLM-REDIAL domain folders")
    if path.is_dir() or path.suffix == ".parquet":
        files = parquet_files(path)
        names = set(pq.read_schema(files[0]).names)
        if {"messages", "outcome", "turns"} <= names:
            return "corpus"
        fmt = record_format(names)
        if fmt is None:
            raise _unknown(files[0], "no column says what it is")
        return fmt
    records = _head_records(path)
    if records is None:  # a first record over 64 KiB: the first known key in the file decides
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        found = {fmt: min((p for n in names if (p := head.find(f'"{n}"'.encode())) >= 0), default=-1)
                 for fmt, names in SIGNATURES}
        found = {fmt: p for fmt, p in found.items() if p >= 0}
        if not found:
            raise _unknown(path, "its first record has no field that says what it is")
        return min(found, key=found.get)
    formats = [record_format(r) if isinstance(r, dict) else None for r in records]
    if formats[0] is None:
        raise _unknown(path, "its first record has no field that says what it is")
    if len(set(formats) - {None}) > 1:
        seen = ", ".join(f"{fmt} (record {formats.index(fmt)})" for fmt in dict.fromkeys(formats) if fmt)
        raise _unknown(path, f"records of several formats ({seen})")
    return formats[0]


def parquet_rows(files: list[Path], columns: list[str] | None) -> Iterator[dict[str, Any]]:
    for f in files:
        pf = pq.ParquetFile(f)
        cols = [c for c in columns if c in pf.schema_arrow.names] if columns else None
        for batch in pf.iter_batches(batch_size=2048, columns=cols):
            yield from batch.to_pylist()
