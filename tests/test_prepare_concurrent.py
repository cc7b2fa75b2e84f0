"""`interplay prepare` run by several processes at once on one empty cache (two jobs on a node, `make test` beside
`make generate`): both succeed, the model is built once and whole, and nothing temporary is left, also when the
build fails.

No real model: `transformers` is replaced by a fake whose save_pretrained writes the weights slowly, and
find_gguf by a path that is never read. The children import this file and run `child`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from interplay import prepare

WEIGHTS_CHUNKS, CHUNK = 10, b"w" * 1000


def fake_transformers(delay_s: float = 0.0, fail: bool = False, calls: list[str] | None = None) -> types.ModuleType:
    """Enough of transformers for prepare_model: a model whose save_pretrained takes `delay_s` (or fails half-way)."""

    class Model:
        config = types.SimpleNamespace()

        def state_dict(self) -> dict:
            return {}

        def load_state_dict(self, state: dict) -> None:
            pass

        def save_pretrained(self, path: str | os.PathLike[str]) -> None:
            path = Path(path)
            if calls is not None:
                calls.append(str(path))
            path.mkdir(parents=True, exist_ok=True)
            with open(path / "model.safetensors", "wb") as f:
                for i in range(WEIGHTS_CHUNKS):
                    if fail and i == WEIGHTS_CHUNKS // 2:
                        raise OSError(28, "No space left on device")
                    f.write(CHUNK)
                    f.flush()
                    time.sleep(delay_s / WEIGHTS_CHUNKS)
            (path / "config.json").write_text("{}")

    class Tokenizer:
        def save_pretrained(self, path: str | os.PathLike[str]) -> None:
            (Path(path) / "tokenizer.json").write_text("{}")

    module = types.ModuleType("transformers")
    module.AutoModelForCausalLM = types.SimpleNamespace(from_pretrained=lambda *a, **k: Model(),
                                                        from_config=lambda config: Model())
    module.AutoTokenizer = types.SimpleNamespace(from_pretrained=lambda *a, **k: Tokenizer())
    return module


def child(sync_dir: str, me: str, other: str, delay_s: str) -> None:
    """One `interplay prepare` (of the model) in a process of its own; its start, end and outcome in me.json."""
    calls: list[str] = []
    sys.modules["transformers"] = fake_transformers(float(delay_s), calls=calls)
    prepare.find_gguf = lambda: Path("/nonexistent") / prepare.GGUF_NAME
    sync = Path(sync_dir)
    (sync / f"{me}.ready").touch()
    deadline = time.time() + 60
    while not (sync / f"{other}.ready").exists() and time.time() < deadline:  # start together
        time.sleep(0.005)
    result: dict = {"start": time.time()}
    try:
        result["path"] = str(prepare.prepare_model())
        result["ok"] = True
    except BaseException as e:  # noqa: BLE001 (reported to the test)
        result["ok"], result["error"] = False, f"{type(e).__name__}: {e}"
    result["end"], result["built"] = time.time(), len(calls)
    (sync / f"{me}.json").write_text(json.dumps(result))


def leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if "tmp" in p.name]


def test_two_prepares_at_once_on_an_empty_cache_both_succeed_and_build_once(tmp_path):
    cache, sync = tmp_path / "cache", tmp_path / "sync"
    sync.mkdir()
    env = {**os.environ, "INTERPLAY_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    code = "import sys, test_prepare_concurrent as t; t.child(*sys.argv[1:])"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(sync), me, other, "1.5"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me, other in (("a", "b"), ("b", "a"))]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    a, b = (json.loads((sync / f"{n}.json").read_text()) for n in "ab")
    assert max(a["start"], b["start"]) < min(a["end"], b["end"]), (a, b)  # they did run at the same time
    assert a["ok"] and b["ok"], (a, b)
    model = cache / "models" / prepare.MODEL_DIR_NAME
    assert a["path"] == b["path"] == str(model)
    assert a["built"] + b["built"] == 1  # the second waited and used the first one's directory
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (model / "model.safetensors").stat().st_size == WEIGHTS_CHUNKS * len(CHUNK)
    assert leftovers(cache) == []
    assert [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == [prepare.MODEL_DIR_NAME]


def test_a_failed_prepare_leaves_nothing_temporary_and_a_rerun_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERPLAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(prepare, "find_gguf", lambda: Path("/nonexistent") / prepare.GGUF_NAME)
    monkeypatch.setitem(sys.modules, "transformers", fake_transformers(fail=True))
    with pytest.raises(OSError, match="No space left"):
        prepare.prepare_model()
    model = prepare.default_model_dir()
    assert not model.exists() and leftovers(tmp_path / "cache") == []
    monkeypatch.setitem(sys.modules, "transformers", fake_transformers())
    assert prepare.prepare_model() == model and (model / "config.json").is_file()
    assert leftovers(tmp_path / "cache") == []


def test_an_incomplete_model_directory_is_replaced(tmp_path, monkeypatch):
    """A directory at the model's name without config.json (not one prepare renamed into place) is rebuilt, and a
    killed builder's temporary directory is removed."""
    monkeypatch.setenv("INTERPLAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(prepare, "find_gguf", lambda: Path("/nonexistent") / prepare.GGUF_NAME)
    monkeypatch.setitem(sys.modules, "transformers", fake_transformers())
    model = prepare.default_model_dir()
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"cut short")
    killed = model.with_name(f".{model.name}.99999.0123456789ab.tmp")
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"cut short")
    assert prepare.prepare_model() == model
    assert (model / "config.json").is_file()
    assert (model / "model.safetensors").stat().st_size == WEIGHTS_CHUNKS * len(CHUNK)
    assert leftovers(tmp_path / "cache") == []
