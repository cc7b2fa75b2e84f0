"""Tests for interplay.generator.config (validation, engine args, hash, overrides) and engine.check_config.

check_config imports vLLM (a few seconds); it is imported once, at module level, so only the first test pays.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import require
from interplay.cli import main
from interplay.common.roles import ROLES
from interplay.generator.config import ConfigError, GenerateConfig, load_config, parse_override
from interplay.generator.runtime.engine import check_config
from interplay.generator.runtime.server_checks import check_local

require("vllm")  # check_config's own import of vLLM, paid once here

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
HUB_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"  # a hub id: validation does not touch the filesystem or network


# ------------------------------------------------------------------------------------------------- helpers


def make_model(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    return path


def make_adapter(path: Path, rank: int = 16) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    return path


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _local(path: str) -> bool:
    return path.startswith(("/", ".", "~")) or path.count("/") >= 2


def loadable_overrides(config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Make a shipped config loadable here: a fake HOME holding ~/ models, tmp dirs for other local models,
    tmp adapters (rank 16, or the config's max_lora_rank if lower), tmp seed files."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    raw = yaml.safe_load(config_path.read_text()) or {}
    overrides: dict[str, Any] = {}
    for prefix, section in [("engine", raw.get("engine") or {})] + [
            (f"{r}.engine", (raw.get(r) or {}).get("engine") or {}) for r in ROLES]:
        model = section.get("model")
        if not isinstance(model, str) or not _local(model):
            continue  # a hub id (or no model here): nothing on disk to fake
        expanded = Path(os.path.expanduser(os.path.expandvars(model)))
        if (expanded / "config.json").is_file():
            continue
        if model.startswith("~"):
            make_model(expanded)  # under the fake HOME: exercises the ~ expansion too
        else:
            overrides[f"{prefix}.model"] = str(make_model(tmp_path / "models" / prefix))
    max_rank = int((raw.get("engine") or {}).get("max_lora_rank", 16))
    for role in ROLES:
        if (raw.get(role) or {}).get("adapter"):
            overrides[f"{role}.adapter"] = str(make_adapter(tmp_path / "adapters" / role, min(16, max_rank)))
    seeds = raw.get("seeds") or {}
    if seeds.get("source") == "file":
        for key in ("path", "catalog"):
            f = tmp_path / f"seeds-{key}.jsonl"
            f.write_text("")
            overrides[f"seeds.{key}"] = str(f)
    return overrides


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_model(tmp_path / "model")


def base(model: str | Path = HUB_MODEL, **extra: Any) -> dict[str, Any]:
    return {"engine.model": str(model), **extra}


def config_error(overrides: dict[str, Any], path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


# -------------------------------------------------------------------------------------------- shipped configs


def test_configs_are_shipped():
    assert CONFIGS, "no configs/*.yaml found"
    assert any(p.name == "embedded.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    overrides = loadable_overrides(path, tmp_path, monkeypatch)
    config = load_config(path, overrides)
    raw = yaml.safe_load(path.read_text())
    # the file's own values arrive (nothing silently dropped or defaulted)
    assert config.topology == raw.get("topology", "shared")
    assert config.conversation.max_turns == raw.get("conversation", {}).get("max_turns", 10)
    for role in ROLES:
        if config.topology == "server":  # no engine here: the server's model, and our copy of its tokenizer
            settings = config.server_settings(role)
            assert settings["model"], role
            assert not str(settings["tokenizer"]).startswith("~"), "tokenizer path must be expanded"
        else:
            args = config.engine_args(role)
            assert args.get("model"), role
            assert not str(args["model"]).startswith("~"), "model path must be expanded"
        for key, value in (raw.get(role) or {}).get("sampling", {}).items():
            assert config.sampling(role)[key] == value
    if config.topology == "server":
        check_local(config)  # every sampling key is one /v1/completions takes
    else:
        check_config(config)  # every engine and sampling key is a real vLLM one


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_hash_is_stable(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    overrides = loadable_overrides(path, tmp_path, monkeypatch)
    assert load_config(path, overrides).hash() == load_config(path, overrides).hash()


def test_embedded_model_path_uses_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = REPO / "configs" / "embedded.yaml"
    raw_model = yaml.safe_load(path.read_text())["engine"]["model"]
    if not raw_model.startswith("~"):
        pytest.skip("embedded.yaml no longer points into HOME")
    loadable_overrides(path, tmp_path, monkeypatch)
    config = load_config(path)
    assert config.engine_args("user")["model"].startswith(str(tmp_path / "home"))
    # ...and without the model there, it is refused
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(path)


# ----------------------------------------------------------------------------------------- invalid configs


def test_misspelled_top_level_key():
    msg = config_error(base(max_in_flite=4))
    assert "max_in_flite" in msg and "unknown key" in msg


def test_misspelled_nested_key():
    msg = config_error(base(**{"conversation.max_turn": 8}))
    assert "conversation.max_turn" in msg and "unknown key" in msg


def test_misspelled_key_in_file_names_file(tmp_path: Path):
    path = write_yaml(tmp_path / "typo.yaml", {"engine": {"model": HUB_MODEL}, "conversation": {"max_turn": 8}})
    msg = config_error({}, path)
    assert "conversation.max_turn" in msg and str(path) in msg


@pytest.mark.parametrize("key,value", [
    ("max_in_flight", 0), ("topology", "triangle"), ("num_dialogues", -1), ("conversation.max_turns", 1),
    ("seeds.source", "imdb"), ("dialogues_per_shard", "many"),
])
def test_bad_value_names_field(key: str, value: Any):
    msg = config_error(base(**{key: value}))
    assert key in msg
    assert repr(value) in msg  # the offending value is shown


def test_missing_model():
    msg = config_error({})
    assert "engine.model" in msg


def test_missing_role_model_separate(model_dir: Path):
    msg = config_error({"topology": "separate", "user.engine.model": str(model_dir)})
    assert "recommender.engine.model" in msg


def test_model_path_that_does_not_exist_is_refused(tmp_path: Path):
    missing = tmp_path / "no-such-model"
    msg = config_error(base(missing))
    assert str(missing) in msg and "does not exist" in msg


def test_model_dir_without_config_json_is_refused(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    assert "config.json" in config_error(base(tmp_path / "empty"))


def test_missing_model_path_names_field(tmp_path: Path):
    assert "engine.model" in config_error(base(tmp_path / "no-such-model"))


def test_adapter_without_adapter_config(tmp_path: Path):
    (tmp_path / "adapter").mkdir()
    msg = config_error(base(**{"recommender.adapter": str(tmp_path / "adapter")}))
    assert "recommender.adapter" in msg and "adapter_config.json" in msg


def test_adapter_rank_above_max_lora_rank(tmp_path: Path):
    adapter = make_adapter(tmp_path / "a64", rank=64)
    msg = config_error(base(**{"user.adapter": str(adapter), "engine.max_lora_rank": 16}))
    assert "user.adapter" in msg and "64" in msg and "max_lora_rank" in msg


def test_adapter_rank_above_default_is_derived(tmp_path: Path):
    # without an explicit max_lora_rank the engine's is derived from the adapter: no error
    adapter = make_adapter(tmp_path / "a64", rank=64)
    config = load_config(None, base(**{"user.adapter": str(adapter)}))
    assert config.engine_args("user")["max_lora_rank"] == 64


def test_role_engine_with_shared_topology():
    msg = config_error(base(**{"user.engine.max_model_len": 512}))
    assert "user.engine" in msg and "separate" in msg


def test_seeds_file_without_path(tmp_path: Path):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("")
    msg = config_error(base(**{"seeds.source": "file", "seeds.catalog": str(catalog)}))
    assert "seeds.path" in msg


def test_seeds_file_that_does_not_exist(tmp_path: Path):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("")
    msg = config_error(base(**{"seeds.source": "file", "seeds.path": str(tmp_path / "nope.parquet"),
                               "seeds.catalog": str(catalog)}))
    assert "seeds.path" in msg and "nope.parquet" in msg


def test_several_errors_all_reported():
    msg = config_error(base(max_in_flight=0, topology="triangle"))
    assert "max_in_flight" in msg and "topology" in msg


def test_system_prompt_with_unknown_placeholder_is_refused():
    msg = config_error(base(**{"user.system_prompt": "You like {genre}."}))
    assert "user.system_prompt" in msg


# ------------------------------------------------------------------------------------------ load_config I/O


def test_config_file_missing(tmp_path: Path):
    assert "does not exist" in config_error({}, tmp_path / "nope.yaml")


def test_config_file_invalid_yaml(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("engine: {model: [unclosed\n")
    assert "not valid YAML" in config_error({}, path)


def test_config_file_not_a_mapping(tmp_path: Path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    assert "mapping" in config_error({}, path)


def test_override_beats_file(tmp_path: Path):
    path = write_yaml(tmp_path / "c.yaml", {"engine": {"model": HUB_MODEL}, "conversation": {"max_turns": 8}})
    config = load_config(path, {"conversation.max_turns": 4, "user.sampling.temperature": 0.1})
    assert config.conversation.max_turns == 4
    assert config.sampling("user")["temperature"] == 0.1
    assert config.engine["model"] == HUB_MODEL  # sibling keys are kept


def test_override_into_non_section():
    with pytest.raises(ConfigError, match="topology is not a section"):
        load_config(None, base(**{"topology": "shared", "topology.x": 1}))


# -------------------------------------------------------------------------------------------- check_config


def test_check_config_unknown_engine_argument():
    config = load_config(None, base(**{"engine.max_modle_len": 2048}))
    with pytest.raises(ConfigError, match=r"engine\.max_modle_len"):
        check_config(config)


def test_check_config_unknown_role_engine_argument(model_dir: Path):
    config = load_config(None, {"topology": "separate", "engine.model": str(model_dir),
                                "recommender.engine.gpu_mem_util": 0.5})
    with pytest.raises(ConfigError, match=r"recommender\.engine\.gpu_mem_util"):
        check_config(config)


def test_check_config_unknown_sampling_key():
    config = load_config(None, base(**{"user.sampling.temprature": 0.7}))
    with pytest.raises(ConfigError, match=r"user\.sampling\.temprature"):
        check_config(config)


@pytest.mark.parametrize("key", ["seed", "output_kind"])
def test_check_config_reserved_sampling_key(key: str):
    config = load_config(None, base(**{f"recommender.sampling.{key}": 1}))
    with pytest.raises(ConfigError, match=rf"recommender\.sampling\.{key}"):
        check_config(config)


def test_check_config_accepts_real_keys():
    check_config(load_config(None, base(**{
        "engine.max_model_len": 1024, "engine.enable_prefix_caching": True,
        "user.sampling.repetition_penalty": 1.1, "recommender.sampling.stop": ["\nUser:"]})))


def test_check_config_bad_sampling_type():
    config = load_config(None, base(**{"user.sampling.max_tokens": "lots"}))
    with pytest.raises(ConfigError, match=r"user\.sampling"):
        check_config(config)


def test_check_config_bad_sampling_value():
    config = load_config(None, base(**{"user.sampling.temperature": -1}))
    with pytest.raises(ConfigError, match=r"user\.sampling"):
        check_config(config)


# --------------------------------------------------------------------------------------------- engine_args


def test_engine_args_shared_with_adapters(tmp_path: Path):
    user, rec = make_adapter(tmp_path / "u", rank=8), make_adapter(tmp_path / "r", rank=32)
    config = load_config(None, base(**{"user.adapter": str(user), "recommender.adapter": str(rec),
                                       "engine.max_model_len": 1024}))
    args = config.engine_args("user")
    assert args == config.engine_args("recommender")  # one engine
    assert args["enable_lora"] is True
    assert args["max_loras"] >= 2
    assert args["max_lora_rank"] >= 32
    assert args["max_model_len"] == 1024
    check_config(config)


def test_engine_args_shared_one_adapter(tmp_path: Path):
    config = load_config(None, base(**{"recommender.adapter": str(make_adapter(tmp_path / "r", rank=8))}))
    args = config.engine_args("user")
    assert args["enable_lora"] is True and args["max_lora_rank"] >= 8 and args["max_loras"] >= 1


def test_engine_args_explicit_lora_settings_win(tmp_path: Path):
    config = load_config(None, base(**{"user.adapter": str(make_adapter(tmp_path / "u", rank=8)),
                                       "engine.max_loras": 4, "engine.max_lora_rank": 32}))
    args = config.engine_args("user")
    assert args["max_loras"] == 4 and args["max_lora_rank"] == 32


def test_engine_args_no_adapters_no_lora():
    assert "enable_lora" not in load_config(None, base()).engine_args("user")


def test_engine_args_separate_merges_role_over_top(model_dir: Path, tmp_path: Path):
    other = make_model(tmp_path / "other-model")
    config = load_config(None, {
        "topology": "separate",
        "engine": {"model": str(model_dir), "max_model_len": 2048, "dtype": "bfloat16"},
        "user": {"engine": {"max_model_len": 1024}},
        "recommender": {"engine": {"model": str(other), "dtype": "float32"},
                        "adapter": str(make_adapter(tmp_path / "r", rank=8))},
    })
    user, rec = config.engine_args("user"), config.engine_args("recommender")
    assert user == {"model": str(model_dir), "max_model_len": 1024, "dtype": "bfloat16"}
    assert rec["model"] == str(other) and rec["dtype"] == "float32" and rec["max_model_len"] == 2048
    assert rec["enable_lora"] is True and "enable_lora" not in user  # the adapter is the recommender's alone
    assert config.engine == {"model": str(model_dir), "max_model_len": 2048, "dtype": "bfloat16"}  # not mutated
    check_config(config)


def test_engine_args_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    make_model(tmp_path / "m")
    assert load_config(None, base("~/m")).engine_args("user")["model"] == str(tmp_path / "m")


def test_sampling_defaults_and_role_values():
    config = load_config(None, base(**{"user.sampling.temperature": 0.3}))
    assert config.sampling("user")["temperature"] == 0.3
    assert config.sampling("user")["max_tokens"] > 16  # not vLLM's default of 16
    assert config.sampling("recommender")["temperature"] != 0.3


# ---------------------------------------------------------------------------------------------------- hash


def test_hash_stable_for_equal_configs():
    a = GenerateConfig.model_validate({"engine": {"model": HUB_MODEL, "max_model_len": 1024},
                                       "user": {"sampling": {"temperature": 0.5, "top_p": 0.9}}})
    b = load_config(None, {"user.sampling.top_p": 0.9, "engine.max_model_len": 1024, "engine.model": HUB_MODEL,
                           "user.sampling.temperature": 0.5})
    assert a.hash() == b.hash()
    assert len(a.hash()) == 16


def test_hash_changes_with_max_turns():
    assert load_config(None, base(**{"conversation.max_turns": 8})).hash() != \
        load_config(None, base(**{"conversation.max_turns": 9})).hash()


@pytest.mark.parametrize("key,value", [("seed", 1), ("user.sampling.temperature", 0.1),
                                       ("conversation.accept_marker", "<<yes>>"), ("engine.max_model_len", 999)])
def test_hash_changes_with_generation_keys(key: str, value: Any):
    assert load_config(None, base()).hash() != load_config(None, base(**{key: value})).hash()


@pytest.mark.parametrize("key,value", [("num_dialogues", 5), ("max_in_flight", 3)])
def test_hash_unchanged_by_runtime_keys(key: str, value: Any):
    assert load_config(None, base()).hash() == load_config(None, base(**{key: value})).hash()


# ------------------------------------------------------------------------------------------ parse_override


@pytest.mark.parametrize("text,expected", [
    ("a.b=0.7", ("a.b", 0.7)),
    ("x=true", ("x", True)),
    ("y=[1,2]", ("y", [1, 2])),
    ("n=12", ("n", 12)),
    ("s=hello", ("s", "hello")),
    ("z=null", ("z", None)),
    ("stop=a=b", ("stop", "a=b")),  # only the first '=' splits
    (" k.j = 3 ", ("k.j", 3)),
])
def test_parse_override(text: str, expected: tuple[str, Any]):
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize("text", ["novalue", "=3", "a=[1,", ""])
def test_parse_override_refused(text: str):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(text)


# -------------------------------------------------------------------------------------------- CLI: exit 2


def _generate(config: Path, out: Path, *extra: str) -> tuple[int, float]:
    started = time.monotonic()
    code = main(["generate", "--config", str(config), "--output", str(out), *extra])
    return code, time.monotonic() - started


def test_cli_typo_exits_2_before_engine(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]):
    path = write_yaml(tmp_path / "typo.yaml", {"engine": {"model": str(model_dir)}, "conversation": {"max_turn": 8}})
    out = tmp_path / "out"
    code, elapsed = _generate(path, out)
    err = capsys.readouterr().err
    assert code == 2
    assert elapsed < 10
    assert "interplay: error:" in err and "conversation.max_turn" in err
    assert not (out / "logs").exists()
    assert not (out / "manifest.json").exists()


def test_cli_missing_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    missing = tmp_path / "no-such-model"
    path = write_yaml(tmp_path / "c.yaml", {"engine": {"model": str(missing)}})
    out = tmp_path / "out"
    code, elapsed = _generate(path, out)
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 10
    assert "interplay: error:" in err and str(missing) in err
    assert not (out / "logs").exists()


def test_cli_unknown_engine_argument_exits_2(tmp_path: Path, model_dir: Path,
                                             capsys: pytest.CaptureFixture[str]):
    path = write_yaml(tmp_path / "c.yaml", {"engine": {"model": str(model_dir)}})
    out = tmp_path / "out"
    code, _ = _generate(path, out, "--set", "engine.max_modle_len=2048")
    err = capsys.readouterr().err
    assert code == 2 and "engine.max_modle_len" in err
    assert not (out / "logs").exists()


def test_cli_bad_set_exits_2(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]):
    path = write_yaml(tmp_path / "c.yaml", {"engine": {"model": str(model_dir)}})
    code, _ = _generate(path, tmp_path / "out", "--set", "max_in_flight")
    assert code == 2 and "--set" in capsys.readouterr().err


def test_cli_num_dialogues_zero_exits_2(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]):
    path = write_yaml(tmp_path / "c.yaml", {"engine": {"model": str(model_dir)}})
    code, _ = _generate(path, tmp_path / "out", "--num-dialogues", "0")
    assert code == 2 and "num_dialogues" in capsys.readouterr().err


def test_cli_config_is_a_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code, _ = _generate(tmp_path, tmp_path / "out")
    assert code == 2 and "interplay: error:" in capsys.readouterr().err
