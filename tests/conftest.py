"""Shared fixtures: a small catalog, seed files and a GenerateConfig whose inputs live in tmp_path; and `require`,
which skips a test whose environment is missing here but fails it under CI."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from interplay.generator.config import GenerateConfig
from interplay.generator.inputs.catalog import Catalog, Item
from interplay.generator.inputs.seeds import Seed, write_seeds
from interplay.prepare import default_model_dir

CATALOG_ROWS = [
    {"item_id": "m1", "title": "Heat", "year": 1995, "attributes": {"genres": ["Crime", "Thriller"]}},
    {"item_id": "m2", "title": "Toy Story", "year": 1995, "attributes": {"genres": ["Animation", "Comedy"]}},
    {"item_id": "m3", "title": "Fargo", "year": 1996, "attributes": {"genres": ["Crime", "Comedy"]}},
    {"item_id": "m4", "title": "Matrix, The", "year": 1999, "attributes": {"genres": ["Sci-Fi"]}},
    {"item_id": "m5", "title": "Alien", "year": 1979, "attributes": {"genres": ["Horror", "Sci-Fi"]}},
    {"item_id": "m6", "title": "Pulp Fiction", "year": 1994, "attributes": {"genres": ["Crime"]}},
    {"item_id": "m7", "title": "Groundhog Day", "year": 1993, "attributes": {"genres": ["Comedy"]}},
]
ITEM_IDS = [r["item_id"] for r in CATALOG_ROWS]


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str) -> None:
    """Skip, here; under CI (the variable CI set, as CI services do and .ci/run does), fail: CI installs vLLM and
    prepares the model first (make test), so a missing piece there is a broken environment, and whole modules of
    skipped tests would pass it silently. Works at module level too."""
    if is_ci():
        pytest.fail(f"{what}; CI must run every test (make test installs and prepares everything)", pytrace=False)
    pytest.skip(what, allow_module_level=True)


def require(module: str) -> ModuleType:
    """pytest.importorskip that fails under CI. Any exception counts, not only ImportError: a broken install
    (a missing shared library, a version clash) is as missing as an absent one."""
    try:
        return importlib.import_module(module)
    except Exception as e:
        missing(f"{module} cannot be imported ({type(e).__name__}: {e})")
        raise  # not reached: missing() raises


def require_model() -> Path:
    """The embedded SmolLM2 directory (`interplay prepare`), or skip here / fail under CI."""
    if not (default_model_dir() / "config.json").is_file():
        missing(f"SmolLM2 not prepared in {default_model_dir()} (interplay prepare)")
    return default_model_dir()


def make_catalog() -> Catalog:
    return Catalog([Item(r["item_id"], "The Matrix" if r["item_id"] == "m4" else r["title"], r["year"],
                         r["attributes"]) for r in CATALOG_ROWS])


def logged(out: Path, tag: str | None = None) -> list[dict[str, Any]]:
    """The shard log's entries of an output (a partition's with `tag`), each with its indices decoded."""
    from interplay.generator.output.layout import log_name
    from interplay.generator.output.shardlog import decode_indices, read_log
    from interplay.generator.output.storage import Storage

    entries, damaged = read_log(Storage(out), log_name(tag))
    assert not damaged
    return [{**e, "indices": decode_indices(e["indices"])} for e in entries]


def make_seeds(n: int, prefix: str = "s") -> list[Seed]:
    genres = ["Crime", "Comedy", "Sci-Fi", "Drama"]
    return [Seed(f"{prefix}{i:02d}", f"Person {i} likes {genres[i % 4].lower()} films and long walks.",
                 {"genres": [genres[i % 4]], "decade": [f"{1970 + 10 * (i % 3)}s"]},
                 ITEM_IDS[i % len(ITEM_IDS)] if i % 4 else None)
            for i in range(n)]


@pytest.fixture
def catalog() -> Catalog:
    return make_catalog()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CATALOG_ROWS))
    return path


@pytest.fixture
def seeds_file(tmp_path: Path) -> Path:
    return write_seeds(tmp_path / "seeds.parquet", make_seeds(20))


@pytest.fixture
def make_config(model_dir: Path, catalog_file: Path, seeds_file: Path) -> Callable[..., GenerateConfig]:
    """make_config(num_dialogues=..., **{"conversation": {...}}, seeds_path=...) -> GenerateConfig."""

    def make(*, seeds_path: Path | None = None, **overrides: Any) -> GenerateConfig:
        data: dict[str, Any] = {
            "engine": {"model": str(model_dir), "max_model_len": 2048},
            "user": {"sampling": {"temperature": 0.9, "max_tokens": 64}},
            "recommender": {"sampling": {"temperature": 0.7, "max_tokens": 64}},
            "seeds": {"source": "file", "path": str(seeds_path or seeds_file), "catalog": str(catalog_file)},
            "conversation": {"max_turns": 6},
            "seed": 7,
            "num_dialogues": 20,
            "max_in_flight": 4,
            "dialogues_per_shard": 5,
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return GenerateConfig.model_validate(data)

    return make


@pytest.fixture(scope="module", params=["tiny", "smollm2"])
def tokenizer(request, tmp_path_factory):
    """A chat tokenizer with SmolLM2's template: the tiny one built here (always) and SmolLM2's own (when
    `interplay prepare` has run)."""
    if request.param == "tiny":
        from fixtures.training.tiny import build_tokenizer

        return build_tokenizer(tmp_path_factory.mktemp("tok"))
    model = require_model()
    return require("transformers").AutoTokenizer.from_pretrained(str(model))
