"""Tests for interplay.generator.inputs.seeds: formats, skip reasons, streaming."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interplay.generator.inputs.seeds import (
    Seed,
    SeedError,
    SeedScan,
    iter_seeds,
    scan_seeds,
    write_seeds,
)

GOOD = {"seed_id": "s1", "preference_summary": "Loves noir.", "target_attributes": {"genres": ["Crime"]}}


def make_seeds(n: int) -> list[Seed]:
    return [
        Seed(f"s{i}", f"Likes film {i}.", {"genres": ["Comedy", "Drama"], "decade": ["1990s"]}, None if i % 3 else str(i))
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    with open(path, "wb") as fh:
        for row in rows:
            fh.write(row if isinstance(row, bytes) else json.dumps(row).encode())
            fh.write(b"\n")
    return path


def test_parquet_round_trip(tmp_path: Path) -> None:
    seeds = make_seeds(10)
    path = write_seeds(tmp_path / "s.parquet", seeds)
    assert list(iter_seeds(path)) == seeds
    assert scan_seeds(path) == SeedScan(str(path), 10, 10, {})
    assert not Path(str(path) + ".tmp").exists()


_text = st.text(min_size=1, max_size=30).map(str.strip).filter(bool)


@settings(max_examples=25, deadline=None)
@given(
    summary=_text,
    attrs=st.dictionaries(_text, st.lists(_text, min_size=1, max_size=3), min_size=1, max_size=4),
    item=st.one_of(st.none(), _text),
)
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, summary: str, attrs: dict, item: str | None) -> None:
    seed = Seed("id", summary, attrs, item)
    path = write_seeds(tmp_path_factory.mktemp("p") / "s.parquet", [seed])
    assert list(iter_seeds(path)) == [seed]


def test_jsonl_round_trip_and_normalisation(tmp_path: Path) -> None:
    rows = [
        {"seed_id": 7, "preference_summary": "  Loves noir. ", "target_attributes": {"genres": "Crime"}, "target_item_id": 12},
        {"seed_id": "b", "preference_summary": "x", "target_attributes": '{"decade": ["1990s"]}', "target_item_id": ""},
        {"seed_id": "c", "preference_summary": "y", "target_attributes": "something funny"},
    ]
    seeds = list(iter_seeds(write_jsonl(tmp_path / "s.jsonl", rows)))
    assert seeds == [
        Seed("7", "Loves noir.", {"genres": ["Crime"]}, "12"),
        Seed("b", "x", {"decade": ["1990s"]}, None),
        Seed("c", "y", {"description": ["something funny"]}, None),
    ]


def test_parquet_int_ids_and_json_string_attributes(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    pq.write_table(
        pa.table({
            "seed_id": [1, 2], "preference_summary": ["a", "b"],
            "target_attributes": ['{"genres": ["Drama"]}', "a rainy day film"], "target_item_id": [5, None],
        }),
        path,
    )
    assert list(iter_seeds(path)) == [
        Seed("1", "a", {"genres": ["Drama"]}, "5"),
        Seed("2", "b", {"description": ["a rainy day film"]}, None),
    ]


def test_parquet_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"seed_id": ["a"], "target_attributes": ["x"]}), path)
    with pytest.raises(SeedError, match="preference_summary"):
        scan_seeds(path)
    with pytest.raises(SeedError, match="preference_summary"):
        iter_seeds(path)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({**GOOD, "seed_id": "s2", "preference_summary": ""}, "empty preference_summary"),
        ({**GOOD, "seed_id": "s2", "preference_summary": " \n\t "}, "empty preference_summary"),
        ({**GOOD, "seed_id": "s2", "preference_summary": "x" * 4001}, "preference_summary too long"),
        ({**GOOD, "seed_id": "s2", "target_attributes": {"genres": [1]}}, "bad target_attributes"),
        ({**GOOD, "seed_id": "s2", "target_attributes": ["Crime"]}, "bad target_attributes"),
        ({**GOOD, "seed_id": "s2", "target_attributes": "{not json"}, "bad target_attributes"),
        ({**GOOD, "seed_id": "s2", "target_attributes": {}}, "empty target_attributes"),
        ({**GOOD, "seed_id": "s2", "target_attributes": {"genres": [" "]}}, "empty target_attributes"),
        ({**GOOD, "seed_id": "  "}, "empty seed_id"),
        ({**GOOD, "seed_id": 1.5}, "bad seed_id"),
        ({**GOOD, "seed_id": True}, "bad seed_id"),
        ({**GOOD, "seed_id": "s2", "target_item_id": [1]}, "bad target_item_id"),
        ({k: v for k, v in GOOD.items() if k != "seed_id"}, "missing seed_id"),
        ({**GOOD, "seed_id": "s2", "target_attributes": None}, "missing target_attributes"),
        (GOOD, "duplicate seed_id"),
        (b'{"seed_id": "s2", "preference_summary": "caf\xe9"', "invalid UTF-8"),
        (b'{"seed_id": "s2", "preference_summary"', "invalid JSON"),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_jsonl_skip_reasons(tmp_path: Path, row: object, reason: str) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [GOOD, row, b"", {**GOOD, "seed_id": "s3"}])
    scan = scan_seeds(path)
    assert (scan.num_rows, scan.num_valid, scan.skipped) == (3, 2, {reason: 1})
    assert [s.seed_id for s in iter_seeds(path)] == ["s1", "s3"]


def test_max_summary_chars_is_respected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [GOOD, {**GOOD, "seed_id": "s2", "preference_summary": "x" * 50}])
    assert scan_seeds(path).num_valid == 2
    assert scan_seeds(path, max_summary_chars=20).skipped == {"preference_summary too long": 1}
    assert [s.seed_id for s in iter_seeds(path, max_summary_chars=20)] == ["s1"]


def test_parquet_skip_reasons(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    pq.write_table(
        pa.table({
            "seed_id": ["a", None, "c", "a", "e"],
            "preference_summary": ["x", "y", "   ", "z", "w"],
            "target_attributes": ['{"g": "1"}', '{"g": "1"}', '{"g": "1"}', '{"g": "1"}', '{"g": 1}'],
        }),
        path,
    )
    scan = scan_seeds(path)
    assert scan.num_rows == 5 and scan.num_valid == 1
    assert scan.skipped == {
        "missing seed_id": 1, "empty preference_summary": 1, "duplicate seed_id": 1, "bad target_attributes": 1,
    }


def test_duplicate_of_invalid_row_is_not_a_duplicate(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [{**GOOD, "preference_summary": ""}, GOOD])
    assert [s.seed_id for s in iter_seeds(path)] == ["s1"]


def test_no_usable_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [{"seed_id": "a"}, b"nope"])
    with pytest.raises(SeedError, match=r"no usable seeds in .*s\.jsonl: .*invalid JSON: 1"):
        scan_seeds(path)
    with pytest.raises(SeedError, match="no usable seeds"):
        list(iter_seeds(path))
    empty = tmp_path / "e.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(SeedError, match="no rows"):
        scan_seeds(empty)


@pytest.mark.parametrize("name", ["seeds.csv", "seeds", "missing.parquet", "missing.jsonl"])
def test_bad_file_names(tmp_path: Path, name: str) -> None:
    if not name.startswith("missing"):
        (tmp_path / name).write_text("seed_id\n")
    with pytest.raises(SeedError, match=str(tmp_path)):
        scan_seeds(tmp_path / name)


def test_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(SeedError, match="parquet"):
        iter_seeds(path)


def test_arrow_map_attributes_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    attrs = pa.array([[("genres", ["Drama"])]], type=pa.map_(pa.string(), pa.list_(pa.string())))
    pq.write_table(pa.table({"seed_id": ["a"], "preference_summary": ["x"], "target_attributes": attrs}), path)
    assert next(iter_seeds(path)).target_attributes == {"genres": ["Drama"]}


def test_scan_and_iter_agree_on_mixed_file(tmp_path: Path) -> None:
    rows: list[object] = []
    for i in range(300):
        kind = i % 5
        if kind == 0:
            rows.append(b"\xff\xfe")
        elif kind == 1:
            rows.append({**GOOD, "seed_id": f"s{i // 2}", "preference_summary": "" if i % 7 == 0 else "p"})
        else:
            rows.append({**GOOD, "seed_id": f"s{i // 3}"})
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    scan = scan_seeds(path)
    seeds = list(iter_seeds(path))
    assert scan.num_valid == len(seeds) and 0 < len(seeds) < 300
    assert scan.num_rows == scan.num_valid + sum(scan.skipped.values()) == 300
    assert len({s.seed_id for s in seeds}) == len(seeds)


def test_iter_seeds_streams_big_parquet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_seeds(tmp_path / "big.parquet", make_seeds(50_000))
    assert pq.ParquetFile(path).metadata.num_rows == 50_000
    batches = []
    real_iter_batches = pq.ParquetFile.iter_batches

    def counting(self, *args, **kwargs):
        for batch in real_iter_batches(self, *args, **kwargs):
            batches.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    first = list(itertools.islice(iter_seeds(path), 3))
    # Only the first record batch is decoded to get the first seeds, not the whole file.
    assert [s.seed_id for s in first] == ["s0", "s1", "s2"]
    assert len(batches) == 1 and batches[0] < 50_000
    assert sum(1 for _ in iter_seeds(path)) == 50_000
    assert sum(batches) >= 50_000


def test_later_passes_skip_duplicates_by_position(tmp_path: Path) -> None:
    """The scan finds repeated ids once; a pass given its duplicate rows yields the same seeds without keeping
    a set of every id (what the plan does on each of many passes)."""
    rows = [GOOD, {**GOOD, "seed_id": "s2"}, GOOD, {**GOOD, "seed_id": "s3"}, {**GOOD, "seed_id": "s2"}]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    scan = scan_seeds(path)
    assert scan.duplicate_rows == frozenset({2, 4}) and scan.skipped == {"duplicate seed_id": 2}
    by_set = [s.seed_id for s in iter_seeds(path)]
    by_position = [s.seed_id for s in iter_seeds(path, duplicate_rows=scan.duplicate_rows)]
    assert by_set == by_position == ["s1", "s2", "s3"]
