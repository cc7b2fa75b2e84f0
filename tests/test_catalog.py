"""Tests for interplay.generator.inputs.catalog: Item, Catalog.load and grounding."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interplay.common.titles import fix_title, normalize
from interplay.generator.inputs.catalog import Catalog, CatalogError, Item

ITEMS = [
    Item("heat", "Heat", 1995, {"genres": ["Action", "Crime"]}),
    Item("up", "Up", 2009, {}),
    Item("it", "It", 2017, {}),
    Item("matrix", "The Matrix", 1999, {"genres": ["Sci-Fi"], "decade": ["1990s"]}),
    Item("seven", "Seven (a.k.a. Se7en)", 1995, {}),
    Item("hamlet90", "Hamlet", 1990, {}),
    Item("hamlet96", "Hamlet", 1996, {}),
    Item("pulp", "Pulp Fiction", 1994, {}),
    Item("amelie", "Amélie", 2001, {}),
    Item("her", "Her", 2013, {}),
    Item("go", "Go", 1999, {}),
    Item("paradiso", "Cinema Paradiso (Nuovo cinema Paradiso)", 1989, {}),
    Item("schindler", "Schindler's List", 1993, {}),
    Item("lotr", "The Lord of the Rings: The Fellowship of the Ring", 2001, {}),
    Item("fast", "Fast & Furious", 2009, {}),
    Item("noyear", "Nosferatu", None, {}),
]


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return Catalog(ITEMS)


def test_item_display() -> None:
    assert Item("1", "The Matrix", 1999, {}).display == "The Matrix (1999)"
    assert Item("1", "The Matrix", None, {}).display == "The Matrix"


@pytest.mark.parametrize(
    ("a", "b"),
    [("The Matrix", "Matrix, The"), ("The Matrix", "  MATRIX!! "), ("Amélie", "AMELIE"),
     ("Fast & Furious", "fast and furious"), ("Schindler’s List", "schindlers list"), ("A Few Good Men", "Few Good Men")],
)  # fmt: skip
def test_normalize_equal(a: str, b: str) -> None:
    assert normalize(a) == normalize(b) != ""


def test_normalize_keeps_distinct_titles_apart() -> None:
    assert normalize("Heat") != normalize("The Heat Is On")
    assert normalize("Up") != normalize("It")


def test_fix_title() -> None:
    assert fix_title("Matrix, The") == "The Matrix"
    assert fix_title("City of Lost Children, The (Cité des enfants perdus, La)") == (
        "The City of Lost Children (La Cité des enfants perdus)"
    )
    assert fix_title("Armée des ombres, L'") == "L'Armée des ombres"
    assert fix_title("(500) Days of Summer") == "(500) Days of Summer"
    assert fix_title("Pulp Fiction") == "Pulp Fiction"


def test_catalog_basics() -> None:
    cat = Catalog([Item("1", "Heat", 1995, {}), Item("2", "Up", 2009, {}), Item("1", "Other", 2000, {})])
    assert len(cat) == 2 and "1" in cat and "3" not in cat
    assert cat.get("1") == Item("1", "Heat", 1995, {}) and cat.get("3") is None
    assert cat.num_skipped == {"duplicate item_id": 1}
    with pytest.raises(TypeError):
        Catalog([("1", "Heat")])  # type: ignore[list-item]


def test_year_form(cat: Catalog) -> None:
    assert cat.ground("I recommend The Matrix (1999) and Heat (1995).") == ["matrix", "heat"]
    assert cat.ground("Try It (2017), Up (2009), Her (2013) or Go (1999)") == ["it", "up", "her", "go"]


@pytest.mark.parametrize(
    "text",
    ["the MATRIX (1999)", "Matrix, The (1999)", "**The Matrix** (1999)", "“The Matrix” ( 1999 )",
     "1. The   Matrix (1999) - mind-bending", "Watch matrix! (1999)"],
)  # fmt: skip
def test_case_punctuation_article_tolerance(cat: Catalog, text: str) -> None:
    assert cat.ground(text) == ["matrix"]


def test_missing_year(cat: Catalog) -> None:
    assert cat.ground("Have you seen Pulp Fiction? Also try The Matrix.") == ["pulp", "matrix"]
    assert cat.ground("I recommend The Lord of the Rings: The Fellowship of the Ring for you") == ["lotr"]
    assert cat.ground('Maybe "Nosferatu" (1922) or "Heat"') == ["noyear", "heat"]


def test_accents_and_alternative_titles(cat: Catalog) -> None:
    assert cat.ground("Amelie (2001)") == ["amelie"]
    assert cat.ground("**AMÉLIE**") == ["amelie"]
    assert cat.ground('"Ame\u0301lie"') == ["amelie"]  # decomposed accent
    assert cat.ground("Se7en (1995) and 'Nuovo Cinema Paradiso'") == ["seven", "paradiso"]
    assert cat.ground("Fast and Furious (2009)") == ["fast"]
    assert cat.ground("‘Schindler’s List’") == ["schindler"]


def test_lists(cat: Catalog) -> None:
    text = "Here you go:\n1. Heat - a crime epic\n2. Up: Pixar at its best\n3) It – horror\n- Her (romance)\n* Go\n"
    assert cat.ground(text) == ["heat", "up", "it", "her", "go"]


def test_lists_do_not_ground_sentences(cat: Catalog) -> None:
    assert cat.ground("- It is up to you\n- Go with your gut: Her choice") == []


def test_quotes_and_markdown(cat: Catalog) -> None:
    text = "Try \"Heat\", 'Up', “It”, **Her**, *Go* and _Amélie_ and __Pulp Fiction__."
    assert cat.ground(text) == ["heat", "up", "it", "her", "go", "amelie", "pulp"]


def test_order_of_first_mention_and_dedup(cat: Catalog) -> None:
    text = "Up (2009) is sweet. Pulp Fiction is not. **Up** again, and Heat (1995), then Pulp Fiction (1994)."
    assert cat.ground(text) == ["up", "pulp", "heat"]


def test_same_title_disambiguated_by_year(cat: Catalog) -> None:
    assert cat.ground("Hamlet (1996)") == ["hamlet96"]
    assert cat.ground("Hamlet (1990)") == ["hamlet90"]
    assert cat.ground('"Hamlet"') == ["hamlet90"]  # no year: first in catalog order
    assert cat.ground("Hamlet (1997)") == ["hamlet96"]  # wrong year: the closest one
    assert cat.ground("Hamlet (1996) and Hamlet (1990)") == ["hamlet96", "hamlet90"]


def test_exact_year_beats_longer_title_with_other_year() -> None:
    cat = Catalog([Item("watchit", "Watch It", 1993, {}), Item("it", "It", 2017, {})])
    assert cat.ground("Go watch It (2017) tonight") == ["it"]
    assert cat.ground("Go Watch It (1993) tonight") == ["watchit"]


def test_catalog_order_is_priority() -> None:
    a, b = Item("a", "Crash", 2004, {}), Item("b", "Crash", 1996, {})
    assert Catalog([a, b]).ground('"Crash"') == ["a"]
    assert Catalog([b, a]).ground('"Crash"') == ["b"]
    assert Catalog([b, a]).ground("Crash (2004)") == ["a"]


@pytest.mark.parametrize(
    "text",
    ["It was up to you, go see it", "It Was Up To You. Go See It!", "Up next: Her thoughts on it.",
     "I think it is up to her to go. Seven days later the heat was gone.", "The Heat Was On",
     "Heat the oven to 200 (1995 was a good year)", "The Matrix Reloaded is a sequel", ""],
)  # fmt: skip
def test_no_false_positives(cat: Catalog, text: str) -> None:
    assert cat.ground(text) == []


def test_article_plus_single_word_title(cat: Catalog) -> None:
    assert cat.ground("Tonight, watch The Matrix with friends.") == ["matrix"]
    assert cat.ground("Tonight, watch The Heat with friends.") == []  # no item is called "The Heat"


FRAGMENTS = [i.title for i in ITEMS] + [i.display for i in ITEMS] + [
    "(1999)", "(", ")", "**", "*", "_", '"', "'", "“", "”", "‘", "’", "\n", "\n1. ", "\n- ", " - ", ": ",
    "The ", ", The", " ", "&", "é", "\u0301", "\ud800", "1995", "Up", "It",
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=300), st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=40).map("".join)))
def test_ground_never_raises_and_returns_known_ids(cat: Catalog, text: str) -> None:
    ids = cat.ground(text)
    assert all(i in cat for i in ids)
    assert len(ids) == len(set(ids))


def test_ground_on_a_large_catalog() -> None:
    rng = random.Random(0)
    words = "love night dark star war king city man woman story life day time house world heart blood dead".split()
    items = [Item(str(n), " ".join(rng.choice(words).title() for _ in range(rng.randint(1, 4))), 1950 + n % 70, {})
             for n in range(20_000)] + ITEMS  # fmt: skip
    cat = Catalog(items)
    reply = ("Since you love crime films, I recommend Heat (1995), a tense thriller. You might also enjoy **Pulp "
             "Fiction** (1994). 1. The Matrix - sci-fi\n2. Up: animated\nIt was up to you, go see it. Honestly Dark "
             "Night of the City is great and Love Story too. Enjoy your movie night and tell me how you like them!")  # fmt: skip
    # Speed is measured by the benchmarks, not asserted here (this machine is shared and noisy).
    assert {"heat", "matrix", "up"} <= set(cat.ground(reply))


# ----------------------------------------------------------------------- load


def _jsonl(path: Path, lines: list[object]) -> Path:
    with path.open("wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else json.dumps(line).encode())
            f.write(b"\n")
    return path


def test_load_parquet(tmp_path: Path) -> None:
    attr_type = pa.list_(pa.struct([pa.field("name", pa.string()), pa.field("values", pa.list_(pa.string()))]))
    table = pa.table({
        "item_id": pa.array([1, 2, 3, 4, 2, None], pa.int64()),
        "title": ["Matrix, The", "Heat", "Toy Story (1995)", "", "Dup", "No id"],
        "year": pa.array([1999.0, float("nan"), None, 2000.0, 1990.0, 1990.0]),
        "attributes": pa.array([[{"name": "genres", "values": ["Action", "Sci-Fi"]}], [], None, None, None, None], attr_type),
        "extra": [0, 0, 0, 0, 0, 0],
    })  # fmt: skip
    path = tmp_path / "cat.parquet"
    pq.write_table(table, path)
    cat = Catalog.load(path)
    assert len(cat) == 3 and "1" in cat and 1 not in cat
    assert cat.get("1") == Item("1", "The Matrix", 1999, {"genres": ["Action", "Sci-Fi"]})
    assert cat.get("2") == Item("2", "Heat", None, {})
    assert cat.get("3") == Item("3", "Toy Story", 1995, {})  # raw MovieLens title keeps its year
    assert cat.num_skipped == {"missing title": 1, "missing item_id": 1, "duplicate item_id": 1}
    assert cat.ground("The Matrix (1999) and Toy Story") == ["1", "3"]


@pytest.mark.parametrize(
    "attributes",
    [pa.array(['{"genres": ["Drama"], "decade": "1990s"}'], pa.string()),
     pa.array([[("genres", ["Drama"]), ("decade", ["1990s"])]], pa.map_(pa.string(), pa.list_(pa.string())))],
)  # fmt: skip
def test_load_parquet_attribute_encodings(tmp_path: Path, attributes: pa.Array) -> None:
    path = tmp_path / "cat.parquet"
    pq.write_table(pa.table({"item_id": ["a"], "title": ["Heat"], "attributes": attributes}), path)
    assert Catalog.load(path).get("a") == Item("a", "Heat", None, {"genres": ["Drama"], "decade": ["1990s"]})


def test_load_jsonl(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "cat.jsonl", [
        {"item_id": 7, "title": "Matrix, The", "year": 1999.0, "attributes": {"genres": ["Sci-Fi"], "decade": "1990s"}},
        {"item_id": "8", "title": "Heat", "year": None, "attributes": '{"genres": "Crime"}'},
        {"item_id": "9", "title": "Up"},
        b"",
        b'{"item_id": "10", "title": "Caf\xe9"}',
        b"{not json",
        [1, 2],
        {"item_id": "", "title": "Blank id"},
        {"item_id": "11", "title": None},
        {"item_id": 7, "title": "Duplicate"},
    ])  # fmt: skip
    cat = Catalog.load(str(path))
    assert [i.item_id for i in cat] == ["7", "8", "9"]
    assert cat.get("7") == Item("7", "The Matrix", 1999, {"genres": ["Sci-Fi"], "decade": ["1990s"]})
    assert cat.get("8") == Item("8", "Heat", None, {"genres": ["Crime"]})
    assert cat.get("9") == Item("9", "Up", None, {})
    assert cat.num_skipped == {
        "invalid utf-8": 1, "invalid json": 1, "not a json object": 1,
        "missing item_id": 1, "missing title": 1, "duplicate item_id": 1,
    }  # fmt: skip


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [(lambda d: d / "missing.jsonl", "not found"),
     (lambda d: _write(d / "garbage.parquet", b"not a parquet file"), "cannot read"),
     (lambda d: _write(d / "cat.csv", b"item_id,title\n1,Heat\n"), "unsupported"),
     (lambda d: _jsonl(d / "cols.jsonl", [{"id": 1, "title": "Heat"}]), "item_id"),
     (lambda d: _jsonl(d / "empty.jsonl", [{"item_id": 1, "title": ""}, b"{bad"]), "no usable rows"),
     (lambda d: _write(d / "blank.jsonl", b"\n\n"), "no usable rows")],
)  # fmt: skip
def test_load_errors(tmp_path: Path, make, problem: str) -> None:  # noqa: ANN001
    path = make(tmp_path)
    with pytest.raises(CatalogError) as err:
        Catalog.load(path)
    message = str(err.value)
    assert str(path) in message and problem in message and "\n" not in message


def test_load_parquet_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "cat.parquet"
    pq.write_table(pa.table({"item_id": ["1"], "year": [1995]}), path)
    with pytest.raises(CatalogError, match="title"):
        Catalog.load(path)
