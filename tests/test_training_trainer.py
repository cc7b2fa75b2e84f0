"""Tests for training, the adapter directory and merging, on a tiny Llama built in the test (seconds per run).

One `interplay train` run through the CLI is shared by the module's tests: its adapter directory, its loss, its
merge. Loss and weight checks compare before and after; nothing is timed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from conftest import require
from fixtures.training.tiny import build_tiny
from interplay.cli import main
from interplay.training.config import load_train_config
from interplay.training.errors import TrainingInputError

torch = require("torch")
require("peft")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "training"
DATA = FIXTURES / "dialogues.jsonl"
ALL_LINEAR = "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"
# A random tiny model learns fast only with every projection adapted and a large learning rate.
TRAIN_SET = ["--set", "train.max_steps=16", "--set", "train.learning_rate=1e-2", "--set", "train.batch_size=4",
             "--set", "lora.r=8", "--set", f"lora.target_modules={ALL_LINEAR}", "--set", "train.eval_steps=5"]


def tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            digest.update(f.name.encode() + f.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def trained(tiny: Path, tmp_path_factory) -> tuple[Path, str, str]:
    """(adapter dir, stdout, base hash before) of one CLI run on the tiny model."""
    out = tmp_path_factory.mktemp("adapters") / "user-simulator"
    before = tree_hash(tiny)
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", "--role", "user", "--data", str(DATA), "--output", str(out), "--base-model",
                     str(tiny), *TRAIN_SET])
    assert code == 0
    return out, stdout.getvalue(), before


def test_adapter_directory(trained, tiny: Path):
    out, stdout, base_before = trained
    assert tree_hash(tiny) == base_before  # the base model's files are untouched
    assert {"adapter_config.json", "adapter_model.safetensors", "train_config.yaml", "data.json", "loss.json",
            "loss.png", "interplay_base.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.parent.glob(".*.tmp"))  # written beside it and renamed into place
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA" and adapter_config["r"] == 8
    assert set(adapter_config["target_modules"]) == set(ALL_LINEAR.strip("[]").split(","))
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the resolved config is a config file that reproduces the run
    resolved = load_train_config(out / "train_config.yaml")
    assert resolved.role == "user" and resolved.train.max_steps == 16 and resolved.base_model == str(tiny)
    data = json.loads((out / "data.json").read_text())
    assert data["load"]["skipped"]["invalid JSON"] == 1
    assert data["load"]["num_records"] == 15 and data["load"]["num_dialogues"] == 9
    assert data["load"]["endings"] == {"accepted": 4, "gave_up": 2, "unknown": 3}
    assert data["examples"]["num_examples"] == 8  # 9 dialogues, one without a summary
    assert "no preference_summary" in next(iter(data["examples"]["skipped"]))
    assert f"user adapter: {out}" in stdout and "s/step" in stdout


def test_short_run_lowers_the_loss(trained):
    summary = json.loads((trained[0] / "loss.json").read_text())
    assert summary["steps"] == 16 and len(summary["log"]) == 16
    assert summary["eval"]["loss_after"] < summary["eval"]["loss_before"] - 0.05
    first, last = summary["log"][0]["loss"], summary["log"][-1]["loss"]
    assert last < first
    # the held-out curve: before training, every 5 steps, and after the last step
    curve = summary["eval"]["curve"]
    assert [c["step"] for c in curve] == [0, 5, 10, 15, 16]
    assert curve[0]["loss"] == summary["eval"]["loss_before"] and curve[-1]["loss"] == summary["eval"]["loss_after"]


def test_base_weights_unchanged_and_lora_weights_changed(tiny: Path, tmp_path: Path):
    from interplay.training.data import load_training_data
    from interplay.training.trainer import add_lora, fit, load_base, load_tokenizer, prepare_examples

    config = load_train_config(None, {"role": "recommender", "base_model": str(tiny), "output": str(tmp_path / "a"),
                                      "data.paths": [str(DATA)], "train.max_steps": 4,
                                      "train.learning_rate": 1e-2, "lora.r": 4})
    dialogues, stats = load_training_data(config.data.paths, fmt="auto", outcomes=None, min_turns=1,
                                          max_dialogues=None)
    tokenizer = load_tokenizer(str(tiny))
    examples, _ = prepare_examples(config, tokenizer, dialogues, stats)
    model = add_lora(load_base(str(tiny), bf16=False), config)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    fit(config, model, tokenizer, examples, examples[:2], tmp_path / "scratch", bf16=False)
    after = dict(model.named_parameters())
    lora = [k for k in before if "lora_" in k]
    assert lora and all(after[k].requires_grad for k in lora)
    assert all(not torch.equal(before[k], after[k]) for k in lora if "lora_B" in k)
    assert any(not torch.equal(before[k], after[k]) for k in lora if "lora_A" in k)
    base = [k for k in before if "lora_" not in k]
    assert base and all(torch.equal(before[k], after[k]) and not after[k].requires_grad for k in base)


def test_existing_output_needs_overwrite(trained, tiny: Path, capsys: pytest.CaptureFixture[str]):
    out = trained[0]
    code = main(["train", "--role", "user", "--data", str(DATA), "--output", str(out), "--base-model", str(tiny)])
    assert code == 2 and "pass --overwrite" in capsys.readouterr().err


def test_overwrite_refuses_a_directory_that_is_not_an_adapter(tmp_path: Path, tiny: Path,
                                                               capsys: pytest.CaptureFixture[str]):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("...")
    code = main(["train", "--role", "user", "--data", str(DATA), "--output", str(precious), "--base-model",
                 str(tiny), "--overwrite", *TRAIN_SET])
    assert code == 2 and "not an adapter directory" in capsys.readouterr().err
    assert (precious / "thesis.tex").exists()


def test_merge_gives_the_adapters_outputs(trained, tiny: Path, tmp_path: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    assert main(["merge", "--adapter", str(trained[0]), "--output", str(out)]) == 0  # base from the adapter
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny)), str(trained[0]))
        want = peft_model(ids).logits
        base = AutoModelForCausalLM.from_pretrained(str(tiny))(ids).logits
        got = AutoModelForCausalLM.from_pretrained(str(out))(ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, base, atol=1e-4)  # the adapter is in the weights
    assert (out / "tokenizer.json").is_file() and (out / "merged_from.json").is_file()


def test_prepare_merges_the_shipped_adapters_once_and_again_when_they_change(trained, tiny: Path, tmp_path: Path,
                                                                             monkeypatch):
    import shutil

    from interplay import prepare

    monkeypatch.setenv("INTERPLAY_CACHE", str(tmp_path / "cache"))
    shipped = tmp_path / "adapters"
    shutil.copytree(trained[0], shipped / "user")
    merged = prepare.prepare_trained(tiny, shipped)
    assert merged == {"user": prepare.trained_model_dir("user")}  # no recommender adapter shipped: none merged
    weights = merged["user"] / "model.safetensors"
    built = weights.stat().st_mtime_ns
    assert prepare.prepare_trained(tiny, shipped) == merged and weights.stat().st_mtime_ns == built  # kept
    (shipped / "user" / "train_config.yaml").write_text("retrained: true\n")  # the adapter's files changed
    prepare.prepare_trained(tiny, shipped)
    assert weights.stat().st_mtime_ns != built
    assert not [p for p in merged["user"].parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("change,what", [({"vocab_size": 500}, "vocabulary"), ({"hidden": 48}, "architecture")])
def test_adapter_on_a_different_base_is_refused(trained, tmp_path: Path, change: dict, what: str,
                                                capsys: pytest.CaptureFixture[str]):
    other = build_tiny(tmp_path / "other", **change)
    capsys.readouterr()  # building the model wrote its progress bars
    code = main(["merge", "--adapter", str(trained[0]), "--output", str(tmp_path / "m"), "--base-model",
                 str(other)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("interplay: error: ") and err.count("\n") == 1
    assert what in err and str(other) in err
    assert not (tmp_path / "m").exists()


def test_foreign_adapter_with_wrong_shapes_is_refused(trained, tmp_path: Path):
    import shutil

    from interplay.common.adapters import FINGERPRINT_FILE
    from interplay.training.merge import merge

    foreign = tmp_path / "foreign"
    shutil.copytree(trained[0], foreign)
    (foreign / FINGERPRINT_FILE).unlink()  # not one of ours: PEFT's own shape check must still speak clearly
    other = build_tiny(tmp_path / "other", hidden=48)
    with pytest.raises(TrainingInputError, match="does not fit the base model"):
        merge(str(foreign), str(tmp_path / "m"), base=str(other))


def test_show_example_brackets_the_loss_spans(tiny: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["train", "--role", "recommender", "--data", str(DATA), "--output", "unused", "--base-model",
                 str(tiny), "--show-example"]) == 0
    out = capsys.readouterr().out
    assert "<|im_start|>assistant\n[[How about Heat (1995)? A heist thriller with a great cast.<|im_end|>]]" in out
    assert "[[I'd like" not in out  # the user's turns carry no loss for the recommender


def test_show_example_reports_the_data_and_keeps_pearls_opening_as_context(tiny: Path,
                                                                         capsys: pytest.CaptureFixture[str]):
    pearl = FIXTURES.parent / "datasets" / "pearl" / "train.json"
    assert main(["train", "--role", "recommender", "--data", str(pearl), "--output", "unused", "--base-model",
                 str(tiny), "--show-example"]) == 0
    captured = capsys.readouterr()
    assert "6 records read, 3 dialogues (accepted 2, gave up 0, unknown 1); skipped 3: " in captured.err
    assert "Absolutely! What kind of movie" in captured.out  # in the prompt...
    assert "[[Absolutely!" not in captured.out  # ...with no loss
    assert "[[Then Prisoners is a great pick" in captured.out


def test_print_config_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    args = ["train", "--role", "recommender", "--data", str(DATA), "--output", str(tmp_path / "o"),
            "--set", "lora.r=4", "--set", "train.max_seq_len=256", "--prompts-from",
            str(Path(__file__).resolve().parents[1] / "configs" / "embedded.yaml")]
    assert main([*args, "--print-config"]) == 0
    printed = capsys.readouterr().out
    path = tmp_path / "train.yaml"
    path.write_text(printed)
    config = load_train_config(path)
    assert config.lora.r == 4 and config.train.max_seq_len == 256 and config.role == "recommender"
    assert config.data.paths == [str(DATA)] and config.prompts.item_noun == "movie"
    assert yaml.safe_load(printed)["data"]["outcomes"] == ["accepted", "gave_up", "max_turns", "context_limit"]


@pytest.mark.parametrize("override,field", [("lora.r=0", "lora.r"), ("train.learnig_rate=1", "train.learnig_rate"),
                                            ("role=critic", "role")])
def test_bad_config_names_the_field(tmp_path: Path, override: str, field: str,
                                    capsys: pytest.CaptureFixture[str]):
    code = main(["train", "--role", "user", "--data", str(DATA), "--output", str(tmp_path / "o"),
                 "--set", override, "--print-config"])
    assert code == 2 and field in capsys.readouterr().err


def test_unknown_target_module_is_one_error(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(["train", "--role", "user", "--data", str(DATA), "--output", str(tmp_path / "o"), "--base-model",
                 str(tiny), "--set", "lora.target_modules=[qkv_proj]"])
    assert code == 2 and "lora.target_modules" in capsys.readouterr().err


def test_a_decision_weighted_run_trains_and_records_its_weight(tiny: Path, tmp_path: Path):
    out = tmp_path / "weighted"
    code = main(["train", "--role", "user", "--data", str(DATA), "--output", str(out), "--base-model", str(tiny),
                 *TRAIN_SET, "--set", "train.decision_weight=4"])
    summary = json.loads((out / "loss.json").read_text())
    assert code == 0 and summary["decision_weight"] == 4.0
    assert summary["eval"]["loss_after"] < summary["eval"]["loss_before"] - 0.05  # the plain held-out loss
