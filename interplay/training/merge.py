"""`interplay merge`: fold a LoRA adapter into its base model and write full weights (a plain model directory).

    interplay merge --adapter out/adapters/recommender --output out/merged/recommender

The separate-engines topology serves a model per role; point that role's `engine.model` at the merged directory.
The base defaults to the one the adapter records; a base whose architecture or vocabulary differs from the one
the adapter was trained on is refused before anything is merged.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from interplay.common.adapters import FINGERPRINT_FILE, check_adapter, read_adapter_config
from interplay.generator.runtime.identity import fingerprint_dir
from interplay.training.errors import TrainingInputError

HELP = "merge a LoRA adapter into its base model (full weights, for the separate-engines topology)"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", required=True, help="PEFT LoRA adapter directory")
    parser.add_argument("--output", required=True, help="directory for the merged model")
    parser.add_argument("--base-model", help="base model directory or hub id (default: the adapter's own)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="weights' dtype (auto: the base's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def _first_line(error: Exception) -> str:
    """The informative line of a (long, multi-line) loading error."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    for line in lines:
        if "size mismatch" in line or "not found" in line:
            return line.rstrip(".") + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")
    return lines[0] if lines else type(error).__name__


def load_adapter_onto(base: str, adapter: str, *, dtype: str = "auto"):
    """(PEFT model, tokenizer), after checking that the adapter was trained on this base."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    from interplay.training.trainer import load_tokenizer

    tokenizer = load_tokenizer(base)
    try:
        model_config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as e:
        raise TrainingInputError(f"base model {base!r} cannot be loaded: {_first_line(e)}") from None
    check_adapter(adapter, base, model_config.to_dict(), tokenizer)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    try:
        return PeftModel.from_pretrained(model, adapter), tokenizer
    except (RuntimeError, ValueError, KeyError) as e:  # size mismatch, target modules not in this model, ...
        raise TrainingInputError(f"the adapter {adapter!r} does not fit the base model {base!r}: "
                                 f"{_first_line(e)}") from None


def merge(adapter: str, output: str, *, base: str | None = None, dtype: str = "auto",
          overwrite: bool = False) -> Path:
    adapter_config = read_adapter_config(adapter)
    base = base or adapter_config.get("base_model_name_or_path")
    if not base:
        raise TrainingInputError(f"{adapter}: the adapter does not name its base model; pass --base-model")
    out = Path(output).expanduser()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise TrainingInputError(f"{out} already exists; pass --overwrite to replace it")
        if not (out / "config.json").is_file():
            raise TrainingInputError(f"{out} is not a model directory; not replacing it")
    model, tokenizer = load_adapter_onto(base, adapter, dtype=dtype)
    merged = model.merge_and_unload()
    scratch = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    merged.save_pretrained(str(scratch))
    tokenizer.save_pretrained(str(scratch))
    fingerprint_file = Path(adapter).expanduser() / FINGERPRINT_FILE
    (scratch / "merged_from.json").write_text(json.dumps({
        "base_model": base, "adapter": str(adapter), "adapter_fingerprint": fingerprint_dir(adapter),
        "adapter_config": adapter_config,
        "base_fingerprint": json.loads(fingerprint_file.read_text()) if fingerprint_file.is_file() else None,
    }, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch.rename(out)
    return out


def main(args: argparse.Namespace) -> int:
    out = merge(args.adapter, args.output, base=args.base_model, dtype=args.dtype, overwrite=args.overwrite)
    print(f"merged model: {out}  (serve it as a role's engine.model in the separate topology)")
    return 0
