"""Corpus identity: what must match to resume (config, prompts, models and adapters, seeds and catalog by content,
interplay's version) and what may change between runs (memory, parallelism, shard size, threads).

Golden values pin the hashes: a change to how they are computed (or a new config field with a default, which
enters the hash on purpose) fails here, and must be a deliberate one, since it refuses every existing corpus.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from fake_engine import fake_open_engines, make_clients
from interplay.generator.config import RUNTIME_ENGINE_KEYS, RUNTIME_KEYS, load_config
from interplay.generator.dialogue import prompts
from interplay.generator.output.writer import OutputError
from interplay.generator.runtime.identity import (
    DECIDING_MODULES,
    builtin_constants,
    corpus_identity,
    fingerprint_dir,
    identity_hash,
)
from interplay.generator.runtime.run import Generation

HUB_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"  # no file is read for a hub id: the hash is path-independent

# Update only on purpose (and say so in the commit): every corpus made before is refused on resume.
GOLDEN_CONFIG_HASH = "aded8d98cfd7f9e9"  # ... user.card_fit (was bd4d0e554a6758c3)
GOLDEN_IDENTITY_HASH = "056e3104bb69473a"


def test_config_hash_golden_value():
    assert load_config(None, {"engine.model": HUB_MODEL}).hash() == GOLDEN_CONFIG_HASH


def test_identity_hash_golden_value():
    identity = {"config": GOLDEN_CONFIG_HASH, "prompts": "p", "model.user": f"{HUB_MODEL}@main",
                "model.recommender": f"{HUB_MODEL}@main", "adapter.user": None, "adapter.recommender": None,
                "seeds": "s", "catalog": "c", "interplay": "0.1.0"}
    assert identity_hash(identity) == GOLDEN_IDENTITY_HASH


@pytest.mark.parametrize("key,value", [("engine.kv_cache_memory_bytes", 1 << 30),
                                       ("engine.gpu_memory_utilization", 0.5), ("engine.max_num_seqs", 8),
                                       ("engine.tensor_parallel_size", 2), ("engine.pipeline_parallel_size", 2),
                                       ("max_in_flight", 3), ("dialogues_per_shard", 7), ("cpu_threads", "all"),
                                       ("num_dialogues", 5), ("max_attempts", 1)])
def test_speed_and_memory_keys_leave_the_hash_alone_and_are_recorded(key, value):
    base = load_config(None, {"engine.model": HUB_MODEL})
    changed = load_config(None, {"engine.model": HUB_MODEL, key: value})
    assert changed.hash() == base.hash()
    assert changed.runtime_settings()[key] == value


@pytest.mark.parametrize("key,value", [("engine.max_model_len", 999), ("engine.some_future_vllm_flag", 1),
                                       ("engine.dtype", "float32"), ("user.sampling.top_k", 5), ("seed", 3),
                                       ("conversation.item_noun", "book"), ("sampling_seeds", "per_turn")])
def test_every_other_key_is_identity_by_default(key, value):
    """An allow-list of runtime keys: an engine argument or config field nobody listed changes the hash."""
    assert load_config(None, {"engine.model": HUB_MODEL, key: value}).hash() != \
        load_config(None, {"engine.model": HUB_MODEL}).hash()


def test_runtime_lists_are_disjoint_from_the_dialogue_deciding_keys():
    assert not {"seed", "engine", "user", "recommender", "conversation", "seeds", "topology"} & set(RUNTIME_KEYS)
    assert "max_model_len" not in RUNTIME_ENGINE_KEYS and "model" not in RUNTIME_ENGINE_KEYS


def _adapter(path: Path, weights: bytes) -> Path:
    path.mkdir(exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (path / "adapter_model.safetensors").write_bytes(weights)
    return path


def test_content_fingerprints(tmp_path, make_config, monkeypatch):
    config = make_config()
    seeds, catalog = Path(config.seeds.path), Path(config.seeds.catalog)
    before = corpus_identity(config, seeds, catalog)
    assert before == corpus_identity(config, seeds, catalog)
    # A retrained adapter in the same folder, weights of the same size: a different corpus.
    adapter = _adapter(tmp_path / "adapter", b"\x01" * 100)
    with_adapter = make_config(user={"adapter": str(adapter)})
    first = corpus_identity(with_adapter, seeds, catalog)["adapter.user"]
    _adapter(adapter, b"\x02" * 100)
    assert corpus_identity(with_adapter, seeds, catalog)["adapter.user"] != first
    # Large weight files: sampled, and a change at either end is seen.
    big = tmp_path / "big"
    big.mkdir()
    (big / "model.safetensors").write_bytes(b"\0" * (9 << 20))
    fp = fingerprint_dir(big)
    (big / "model.safetensors").write_bytes(b"\0" * ((9 << 20) - 1) + b"\1")
    assert fingerprint_dir(big) != fp
    # A changed built-in prompt, and the model folder's files.
    monkeypatch.setattr(prompts, "USER_SYSTEM", prompts.USER_SYSTEM + " Be brief.")
    assert corpus_identity(config, seeds, catalog)["prompts"] != before["prompts"]
    (Path(config.engine["model"]) / "tokenizer_config.json").write_text("{}")
    assert corpus_identity(config, seeds, catalog)["model.user"] != before["model.user"]


def _edited(value):
    if isinstance(value, str):
        return value + " Be brief."
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {**value, "x": 1} if isinstance(value, dict) else type(value)([*value, "x"])
    return value + 1


@pytest.mark.parametrize("name", sorted(builtin_constants()))
def test_every_builtin_text_and_number_is_part_of_the_identity(name: str, monkeypatch, tmp_path: Path,
                                                               make_config) -> None:
    """Each constant of the modules that decide what the roles see or must write (prompts, notes, openers, the
    teacher's templates, reply patterns, shortlist positions, cards): edited, the corpus identity changes."""
    config = make_config()
    seeds, catalog = Path(config.seeds.path), Path(config.seeds.catalog)
    before = corpus_identity(config, seeds, catalog)["prompts"]
    module_name, attribute = name.rsplit(".", 1)
    module = next(m for m in DECIDING_MODULES if m.__name__ == module_name)
    monkeypatch.setattr(module, attribute, _edited(getattr(module, attribute)))
    assert corpus_identity(config, seeds, catalog)["prompts"] != before


def test_the_teachers_texts_are_among_the_constants() -> None:
    names = set(builtin_constants())
    assert {"interplay.generator.dialogue.prompts.REJECT_REASON_NOTE",
            "interplay.generator.dialogue.prompts.CANDIDATES_NOTE",
            "interplay.generator.dialogue.prompts.USER_SYSTEM_REFERENCE",
            "interplay.generator.dialogue.teacher.REJECTION_TEMPLATES",
            "interplay.generator.dialogue.protocol._REST_ONE_ITEM",
            "interplay.generator.inputs.shortlist.TARGET_POSITIONS"} <= names


def run(config, out: Path) -> dict:
    return asyncio.run(Generation(config, out).run(fake_open_engines(make_clients())))


def test_rerun_with_a_smaller_kv_cache_resumes_and_records_each_run(tmp_path, make_config):
    out = tmp_path / "out"
    run(make_config(num_dialogues=10, engine={"kv_cache_memory_bytes": 4 << 30}), out)
    manifest = run(make_config(num_dialogues=20, max_in_flight=2,
                               engine={"kv_cache_memory_bytes": 1 << 30, "max_num_seqs": 4}), out)
    assert manifest["status"] == "complete" and manifest["totals"]["num_dialogues"] == 20
    assert [r["runtime"]["engine.kv_cache_memory_bytes"] for r in manifest["runs"]] == [4 << 30, 1 << 30]
    assert manifest["runs"][1]["runtime"]["max_in_flight"] == 2
    assert set(manifest["runs"][1]["versions"]) == {"interplay", "vllm"}


def test_a_retrained_adapter_refuses_the_resume_and_names_it(tmp_path, make_config):
    out, adapter = tmp_path / "out", _adapter(tmp_path / "adapter", b"\x01" * 64)
    config = make_config(num_dialogues=5, recommender={"adapter": str(adapter)})
    run(config, out)
    _adapter(adapter, b"\x03" * 64)
    with pytest.raises(OutputError, match="differs in: adapter.recommender"):
        Generation(config, out)


def test_another_interplay_version_refuses_the_resume(tmp_path, make_config, monkeypatch):
    """Its parsing, grounding and ending rules decide the dialogues too."""
    import interplay

    out, config = tmp_path / "out", make_config(num_dialogues=5)
    run(config, out)
    monkeypatch.setattr(interplay, "__version__", "999.0")
    with pytest.raises(OutputError, match="differs in: interplay"):
        Generation(config, out)


def test_inputs_are_on_record_before_the_first_shard(tmp_path, make_config):
    out = tmp_path / "out"
    Generation(make_config(num_dialogues=5), out)  # opened, nothing generated (a run killed right after start)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"]["sha256"] == manifest["identity"]["seeds"] and manifest["num_shards"] == 0
    assert manifest["identity"]["catalog"] == manifest["catalog"]["sha256"]


@pytest.mark.parametrize("change", ["config", "layout", "seeds"])
def test_a_refused_rerun_of_a_complete_corpus_touches_nothing(tmp_path, make_config, change):
    from interplay.common.partition import Partition

    out = tmp_path / "out"
    config = make_config(num_dialogues=5)
    run(config, out)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    options = {}
    if change == "config":
        config = make_config(num_dialogues=5, seed=99)
    elif change == "layout":
        options = {"partition": Partition(0, 2)}
    else:
        from conftest import make_seeds
        from interplay.generator.inputs.seeds import Seed, write_seeds

        edited = make_seeds(20)  # the same rows and count, one summary edited
        edited[0] = Seed(edited[0].seed_id, "Edited.", edited[0].target_attributes, edited[0].target_item_id)
        write_seeds(config.seeds.path, edited)
    with pytest.raises(OutputError):
        Generation(config, out, **options)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
