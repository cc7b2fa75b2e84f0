"""Catalog items, and reading a catalog file (.parquet or .jsonl; columns item_id, title, year, attributes) into Items.

Values are cleaned rather than trusted: ids and titles from int or float columns become digits, a year may sit in
the title (raw MovieLens: "Heat (1995)"), attributes come as a dict, its JSON string or arrow's list-of-pairs
forms. A row that cannot give an item is counted by reason; a file unusable as a whole raises CatalogError.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interplay.common.titles import TRAILING_YEAR_RE, fix_title


class CatalogError(Exception):
    """The catalog file as a whole is unusable (message names the file and the problem)."""


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    title: str  # display title, article in front: "The Matrix"
    year: int | None
    attributes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def display(self) -> str:
        return f"{self.title} ({self.year})" if self.year is not None else self.title


def read_items(p: Path) -> tuple[list[Item], dict[str, int]]:
    """The file's usable items, and counts of skipped rows by reason."""
    rows, skipped = _read_rows(p)
    items = []
    for row in rows:
        item_id, title = _clean_str(row.get("item_id")), _clean_str(row.get("title"))
        if not item_id or not title:
            reason = "missing item_id" if not item_id else "missing title"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        year = _clean_year(row.get("year"))
        ym = TRAILING_YEAR_RE.search(title)  # raw MovieLens keeps the year in the title
        if ym and ym.start() > 0 and year in (None, int(ym.group(1))):
            title, year = title[: ym.start()], int(ym.group(1))
        items.append(Item(item_id, fix_title(title), year, _clean_attributes(row.get("attributes"))))
    return items, skipped


def _read_rows(p: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Raw rows of a catalog file, plus counts of lines that could not even be parsed."""
    if not p.is_file():
        raise CatalogError(f"{p}: {'not a regular file' if p.exists() else 'file not found'}")
    suffix, skipped, rows = p.suffix.lower(), {}, []
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq  # noqa: PLC0415 (only parquet catalogs need pyarrow)

            table = pq.read_table(p)
            columns = [c for c in ("item_id", "title", "year", "attributes") if c in table.column_names]
            rows = _parquet_rows(table.select(columns), skipped)
        except Exception as e:  # pyarrow raises many types for corrupt files
            raise CatalogError(f"{p}: cannot read parquet: {' '.join(str(e).split())}") from e
        seen: set[str] = set(columns)
    elif suffix in (".jsonl", ".ndjson"):
        try:
            data = p.read_bytes()
        except OSError as e:
            raise CatalogError(f"{p}: cannot read file: {e.strerror or e}") from e
        seen = set()
        for line in data.splitlines():
            try:
                obj = json.loads(line.decode("utf-8").lstrip("\ufeff")) if line.strip() else None
                reason = None if isinstance(obj, dict) or not line.strip() else "not a json object"
            except UnicodeDecodeError:
                reason = "invalid utf-8"
            except (ValueError, RecursionError):
                reason = "invalid json"
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
            elif isinstance(obj, dict):
                seen.update(obj)
                rows.append(obj)
    else:
        raise CatalogError(f"{p}: unsupported catalog format {suffix or '(no suffix)'!r}")
    if rows and (missing := [c for c in ("item_id", "title") if c not in seen]):
        raise CatalogError(f"{p}: missing required column(s) {', '.join(missing)}")
    return rows, skipped


def _parquet_rows(table: Any, skipped: dict[str, int]) -> list[dict[str, Any]]:
    """The table's rows; Parquet strings are not checked on write, so a value with invalid UTF-8 costs its row."""
    try:
        return table.to_pylist()
    except UnicodeDecodeError:
        rows = []
        for i in range(table.num_rows):
            try:
                rows.append(table.slice(i, 1).to_pylist()[0])
            except UnicodeDecodeError:
                skipped["invalid utf-8"] = skipped.get("invalid utf-8", 0) + 1
        return rows


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _clean_str(v: Any) -> str:
    """item_id / title as text: ints (and floats like 12.0 from a float column) become digits."""
    if v is None or isinstance(v, bool) or _is_nan(v):
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return " ".join(str(v).split())


def _clean_year(v: Any) -> int | None:
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            return None
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _clean_attributes(v: Any) -> dict[str, list[str]]:
    """str -> list[str] | str, as a dict, its JSON string, or arrow's list-of-pairs forms."""
    if isinstance(v, (str, bytes)):
        try:
            v = json.loads(v)
        except (ValueError, RecursionError):
            return {}
    if isinstance(v, list):  # arrow map: [(k, v)]; seeds.ATTRIBUTES_TYPE: [{"name", "values"}]
        pairs: dict[Any, Any] = {}
        for e in v:
            if isinstance(e, dict) and "name" in e:
                pairs[e["name"]] = e.get("values")
            elif isinstance(e, (tuple, list)) and len(e) == 2:
                pairs[e[0]] = e[1]
        v = pairs
    out: dict[str, list[str]] = {}
    for k, val in (v.items() if isinstance(v, dict) else ()):
        vals = val if isinstance(val, (list, tuple)) else [val]
        clean = [str(x) for x in vals if x is not None and not _is_nan(x) and str(x) != ""]
        if k is not None and clean:
            out[str(k)] = clean
    return out
