"""The simulators shipped in adapters/embedded/: their files match their training record, they were trained on the
embedded base model, and `interplay prepare` merged them where configs/embedded-trained.yaml serves them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from conftest import require_model
from experiments.ship import SHIPPED, check_shipped
from interplay.common.roles import ROLES
from interplay.prepare import trained_model_dir

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_adapters_match_their_record() -> None:
    assert (SHIPPED / "record.json").is_file(), "adapters/embedded/record.json is missing"
    assert check_shipped() == []
    record = json.loads((SHIPPED / "record.json").read_text())
    for role in ROLES:
        curve = json.loads((SHIPPED / role / "loss.json").read_text())["eval"]["curve"]
        assert curve == record["train"][role]["eval_curve"]  # the held-out curve on record is the adapter's own


def test_the_trained_config_serves_what_prepare_merged() -> None:
    config = yaml.safe_load((ROOT / "configs" / "embedded-trained.yaml").read_text())
    for role in ROLES:
        assert Path(config[role]["engine"]["model"]).expanduser() == trained_model_dir(role)


def test_the_shipped_adapters_fit_the_embedded_model() -> None:
    from transformers import AutoConfig, AutoTokenizer

    from interplay.common.adapters import fingerprint

    base = require_model()
    current = fingerprint(AutoConfig.from_pretrained(base).to_dict(), AutoTokenizer.from_pretrained(base))
    for role in ROLES:
        trained_on = json.loads((SHIPPED / role / "interplay_base.json").read_text())
        assert {k: v for k, v in trained_on.items() if k != "base_model"} == current
        merged = json.loads((trained_model_dir(role) / "merged_from.json").read_text())
        from interplay.generator.runtime.identity import fingerprint_dir

        assert merged["adapter_fingerprint"] == fingerprint_dir(SHIPPED / role)  # prepare merged these files
