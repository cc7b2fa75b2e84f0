"""What base model an adapter belongs to: a fingerprint written beside the adapter, checked when it is loaded.

A LoRA adapter only fits the base it was trained on. Shapes catch a different architecture late and obscurely,
and nothing catches a different vocabulary (LoRA does not touch the embeddings): the adapter would load and talk
nonsense. So `interplay train` writes `interplay_base.json` (architecture, sizes, a hash of the vocabulary) and
loading an adapter onto a base (`interplay merge`, `interplay generate`) compares it first and refuses a mismatch
with one message. Plain Python (json, hashlib): the generator checks adapters without the training stack.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


class AdapterError(Exception):
    """An adapter that cannot be read, or that was trained on another base than the one it is loaded onto."""

FINGERPRINT_FILE = "interplay_base.json"
CONFIG_KEYS = ("model_type", "architectures", "vocab_size", "hidden_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "intermediate_size")


def fingerprint(model_config: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()).hexdigest()
    return {**{k: model_config[k] for k in CONFIG_KEYS if k in model_config},
            "tokenizer_size": len(vocab), "tokenizer_sha256": digest[:16]}


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir).expanduser() / "adapter_config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise AdapterError(f"no LoRA adapter at {str(adapter_dir)!r} (adapter_config.json not found)") \
            from None
    except (OSError, ValueError) as e:
        raise AdapterError(f"{path} cannot be read: {e}") from None
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterError(f"{path}: not a LoRA adapter (peft_type {config.get('peft_type')!r})")
    return config


def check_adapter(adapter_dir: str | Path, base: str, model_config: dict[str, Any], tokenizer: Any) -> None:
    """Raise AdapterError when the adapter was trained on a base that differs from `base`."""
    path = Path(adapter_dir).expanduser() / FINGERPRINT_FILE
    if not path.is_file():
        return  # not one of ours: the shapes are checked when PEFT loads it
    trained_on = json.loads(path.read_text())
    current = fingerprint(model_config, tokenizer)
    diffs = [f"{k} {trained_on[k]!r} (adapter) vs {current.get(k)!r} (base)"
             for k in trained_on if k != "base_model" and trained_on[k] != current.get(k)]
    if diffs:
        what = "vocabulary" if all(d.startswith("tokenizer") or d.startswith("vocab") for d in diffs) \
            else "architecture"
        raise AdapterError(
            f"the adapter {str(adapter_dir)!r} was trained on {trained_on.get('base_model')!r}, whose {what} "
            f"differs from the base model {base!r}: " + "; ".join(diffs))
