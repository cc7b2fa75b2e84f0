"""The engine layer refuses an adapter trained on another base before any turn is served: vLLM itself would
load one trained on a different vocabulary without a word (LoRA does not touch the embeddings)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from fixtures.training.tiny import build_tokenizer
from interplay.common.adapters import FINGERPRINT_FILE, fingerprint
from interplay.generator.config import ConfigError
from interplay.generator.runtime.engine import check_adapter_fits

MODEL_CONFIG = {"model_type": "llama", "vocab_size": 600, "hidden_size": 32, "num_hidden_layers": 2}


class _Config(dict):
    def to_dict(self) -> dict:
        return dict(self)


def engine(tokenizer) -> SimpleNamespace:
    """What check_adapter_fits reads of an AsyncLLM: the served model's config and tokenizer."""
    return SimpleNamespace(model_config=SimpleNamespace(hf_config=_Config(MODEL_CONFIG)),
                           get_tokenizer=lambda: tokenizer)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("a")), build_tokenizer(tmp_path_factory.mktemp("b"), 500)


def adapter(path: Path, trained_on=None) -> Path:
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    if trained_on is not None:
        (path / FINGERPRINT_FILE).write_text(json.dumps({"base_model": "the-base",
                                                         **fingerprint(MODEL_CONFIG, trained_on)}))
    return path


def test_adapter_of_the_served_base_passes(make_config, tmp_path, tokenizers):
    config = make_config(user={"adapter": str(adapter(tmp_path / "ok", tokenizers[0]))})
    check_adapter_fits(config, "user", engine(tokenizers[0]))
    check_adapter_fits(config, "recommender", engine(tokenizers[1]))  # no adapter for this role: nothing to check


def test_adapter_of_another_vocabulary_is_refused(make_config, tmp_path, tokenizers):
    config = make_config(recommender={"adapter": str(adapter(tmp_path / "other", tokenizers[1]))})
    with pytest.raises(ConfigError, match=r"recommender\.adapter: .*vocabulary differs from the base model"):
        check_adapter_fits(config, "recommender", engine(tokenizers[0]))


def test_adapter_without_fingerprint_is_left_to_peft(make_config, tmp_path, tokenizers):
    config = make_config(user={"adapter": str(adapter(tmp_path / "foreign"))})
    check_adapter_fits(config, "user", engine(tokenizers[0]))
