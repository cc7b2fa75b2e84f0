"""LoRA fine-tuning of one role with transformers + peft: the only module that imports the training stack.

    dialogues, stats = data.load_training_data(...)       # (no torch needed to find out the data is bad)
    run_training(config, dialogues, stats)                 # examples -> LoRA on the base -> adapter directory

The output directory is a PEFT adapter (adapter_config.json, adapter_model.safetensors) that vLLM serves as a
LoRARequest, plus train_config.yaml (the resolved config), data.json (what was read, skipped and cut),
loss.json and loss.png (the training loss per step, and the loss on held-out dialogues before and after) and
interplay_base.json (the base model's fingerprint). It is written beside the target and renamed into place.

Multi-GPU runs go through the launchers, which start one process per GPU; transformers' Trainer does the rest:
    accelerate launch -m interplay train --config train.yaml
    torchrun --nproc_per_node 8 -m interplay train --config train.yaml
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from interplay.common.adapters import FINGERPRINT_FILE, fingerprint
from interplay.common.cpu import cpu_has_native_bf16
from interplay.training.config import TrainConfig
from interplay.training.curve import write_curve
from interplay.training.data import Dialogue, LoadStats, no_usable
from interplay.training.errors import TrainingInputError
from interplay.training.examples import IGNORE, Example, build_examples, end_of_turn_ids
from interplay.training.output_dir import check_output


def use_bf16(setting: bool | str) -> bool:
    """bf16 autocast (LoRA weights stay fp32): on a GPU that supports it, or a CPU with bf16 instructions."""
    if torch.cuda.is_available():
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = cpu_has_native_bf16()
    if setting == "auto":
        return supported
    if setting and not supported:
        raise TrainingInputError("train.bf16: true, but this machine has no bf16 support (GPU or CPU)")
    return bool(setting)


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise TrainingInputError(f"base_model {path!r} cannot be loaded: {e}") from None
    if not tokenizer.chat_template:
        raise TrainingInputError(f"base_model {path!r} has no chat template: the generator serves chat prompts")
    return tokenizer


def load_base(path: str, *, bf16: bool) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
    except (OSError, ValueError) as e:
        raise TrainingInputError(f"base_model {path!r} cannot be loaded: {e}") from None


def add_lora(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = config.lora
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, peft_config)
    except ValueError as e:  # target modules not in this model
        raise TrainingInputError(f"lora.target_modules: {e}") from None


class Collator:
    """Right-pads a batch: pad ids in the input, IGNORE in the labels, zeros in the attention mask; with a
    `decision_weight` above 1, each token's loss weight too (that weight on decision tokens, 1 elsewhere)."""

    def __init__(self, pad_id: int, decision_weight: float = 1.0):
        self.pad_id, self.decision_weight = pad_id, decision_weight

    def __call__(self, batch: list[Example]) -> dict[str, torch.Tensor]:
        width = max(len(e.input_ids) for e in batch)
        pad = [width - len(e.input_ids) for e in batch]
        out = {
            "input_ids": torch.tensor([e.input_ids + [self.pad_id] * p for e, p in zip(batch, pad)]),
            "labels": torch.tensor([e.labels + [IGNORE] * p for e, p in zip(batch, pad)]),
            "attention_mask": torch.tensor([[1] * len(e.input_ids) + [0] * p for e, p in zip(batch, pad)]),
        }
        if self.decision_weight != 1.0:
            weights = torch.ones(len(batch), width)
            for row, example in enumerate(batch):
                weights[row, list(example.decisions)] = self.decision_weight
            out["loss_weights"] = weights
        return out


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of next-token predictions, each loss token weighted, divided by the summed weights: with
    every weight 1 it is the plain mean over loss tokens."""
    logits, labels, weights = logits[:, :-1].float(), labels[:, 1:], weights[:, 1:]
    per_token = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                  ignore_index=IGNORE, reduction="none").view_as(labels)
    weights = weights * (labels != IGNORE)
    return (per_token * weights).sum() / weights.sum().clamp(min=1e-8)


def weighted_trainer():
    from transformers import Trainer

    class WeightedTrainer(Trainer):
        """transformers' Trainer, whose loss weights the tokens the collator marks (train.decision_weight)."""

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            weights = inputs.pop("loss_weights", None)
            if weights is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = weighted_loss(outputs.logits, labels, weights)
            return (loss, outputs) if return_outputs else loss

    return WeightedTrainer


def split_eval(examples: list[Example], fraction: float, limit: int, seed: int) -> tuple[list, list, str]:
    """(train, eval, which): held-out dialogues chosen by a hash of their id, or the train set when too few."""
    n_eval = min(limit, int(len(examples) * fraction)) if len(examples) >= 10 else 0
    if n_eval == 0:
        return examples, examples[:limit], "train"
    key = {e.dialogue_id: hashlib.blake2b(f"{seed}:{e.dialogue_id}".encode(), digest_size=8).digest()
           for e in examples}
    held = set(sorted(key, key=key.get)[:n_eval])
    return ([e for e in examples if e.dialogue_id not in held], [e for e in examples if e.dialogue_id in held],
            "held-out")


@torch.no_grad()
def mean_loss(model: Any, examples: list[Example], *, batch_size: int, pad_id: int) -> float:
    """Mean cross-entropy per loss token over `examples`."""
    was_training = model.training
    model.eval()
    collate, total, count = Collator(pad_id), 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[i:i + batch_size]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        total += torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                   labels.reshape(-1), ignore_index=IGNORE,
                                                   reduction="sum").item()
        count += int((labels != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1)


def prepare_examples(config: TrainConfig, tokenizer: Any, dialogues: list[Dialogue],
                     load_stats: LoadStats) -> tuple[list[Example], dict[str, Any]]:
    examples, ex_stats = build_examples(tokenizer, config.role, dialogues, config.prompts,
                                        max_seq_len=config.train.max_seq_len,
                                        eos_ids=end_of_turn_ids(tokenizer, config.base_model_path))
    if not examples:
        raise no_usable(f"{config.role} examples", config.data.paths, load_stats.num_records, load_stats.skipped,
                        load_stats.filtered, ex_stats.skipped)
    return examples, {"load": load_stats.as_dict(), "examples": ex_stats.as_dict()}


def training_args(config: TrainConfig, scratch: Path, bf16: bool, num_train: int) -> Any:
    from transformers import TrainingArguments

    t = config.train
    world = int(os.environ.get("WORLD_SIZE", "1"))
    drop_last = num_train >= 2 * t.batch_size * world  # a last batch of one or two examples makes a noisy step
    batches = num_train // (t.batch_size * world) if drop_last else math.ceil(num_train / (t.batch_size * world))
    per_epoch = math.ceil(batches / t.gradient_accumulation_steps)
    total = t.max_steps or math.ceil(per_epoch * t.epochs)
    return TrainingArguments(
        output_dir=str(scratch), per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, learning_rate=t.learning_rate,
        num_train_epochs=t.epochs, max_steps=t.max_steps or -1, lr_scheduler_type=t.lr_scheduler,
        warmup_steps=int(t.warmup_ratio * total), weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps, save_strategy="no", report_to="none", bf16=bf16, seed=t.seed,
        use_cpu=bf16 and not torch.cuda.is_available(),  # transformers refuses CPU bf16 unless told it is CPU
        data_seed=t.seed, remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=False,
        dataloader_drop_last=drop_last,
        gradient_checkpointing=t.gradient_checkpointing, disable_tqdm=not sys.stderr.isatty())


def held_out_loss_callback():
    from transformers import TrainerCallback

    class HeldOutLoss(TrainerCallback):
        """The held-out loss every train.eval_steps steps, appended to `curve` as {step, loss}."""

        def __init__(self, model: Any, eval_set: list[Example], config: TrainConfig, pad_id: int,
                     curve: list[dict[str, float]]):
            self.model, self.eval_set, self.config, self.pad_id, self.curve = model, eval_set, config, pad_id, curve

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % self.config.train.eval_steps == 0:
                loss = mean_loss(self.model, self.eval_set, batch_size=self.config.train.batch_size,
                                 pad_id=self.pad_id)
                self.curve.append({"step": state.global_step, "loss": round(loss, 4)})

    return HeldOutLoss


def fit(config: TrainConfig, model: Any, tokenizer: Any, train_set: list[Example], eval_set: list[Example],
        scratch: Path, *, bf16: bool) -> tuple[Any, dict[str, Any]]:
    """Train the LoRA weights of `model` (a PEFT model) in place; returns the Trainer and the run's summary."""
    HeldOutLoss = held_out_loss_callback()  # noqa: N806 (a class, defined where transformers is imported)
    Trainer = weighted_trainer()  # noqa: N806
    if config.train.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loss_before = mean_loss(model, eval_set, batch_size=config.train.batch_size, pad_id=pad_id)
    curve = [{"step": 0, "loss": round(loss_before, 4)}]
    callbacks = [HeldOutLoss(model, eval_set, config, pad_id, curve)] if config.train.eval_steps else []
    trainer = Trainer(model=model, args=training_args(config, scratch / "trainer", bf16, len(train_set)),
                      train_dataset=train_set, data_collator=Collator(pad_id, config.train.decision_weight),
                      callbacks=callbacks)
    started = time.time()
    trainer.train()
    seconds = time.time() - started
    steps = trainer.state.global_step
    loss_after = mean_loss(model, eval_set, batch_size=config.train.batch_size, pad_id=pad_id)
    return trainer, {
        "role": config.role, "base_model": config.base_model_path, "steps": steps,
        "train_seconds": round(seconds, 1), "seconds_per_step": round(seconds / max(steps, 1), 2),
        "bf16": bf16, "world_size": int(os.environ.get("WORLD_SIZE", "1")), "num_train_examples": len(train_set),
        "decision_weight": config.train.decision_weight,
        "eval": {"num_examples": len(eval_set), "loss_before": round(loss_before, 4),
                 "loss_after": round(loss_after, 4),
                 "curve": curve if curve[-1]["step"] == steps else [*curve, {"step": steps,
                                                                             "loss": round(loss_after, 4)}]},
        "log": [dict(entry) for entry in trainer.state.log_history if "loss" in entry],
    }


def run_training(config: TrainConfig, dialogues: list[Dialogue], load_stats: LoadStats, *,
                 overwrite: bool = False) -> dict[str, Any]:
    """Train one role's adapter on `dialogues` (from data.load_training_data); returns loss.json's summary."""
    from transformers import set_seed

    out = Path(config.output).expanduser()
    check_output(out, overwrite)
    set_seed(config.train.seed)
    bf16 = use_bf16(config.train.bf16)
    base = config.base_model_path
    tokenizer = load_tokenizer(base)
    examples, data_report = prepare_examples(config, tokenizer, dialogues, load_stats)
    train_set, eval_set, eval_split = split_eval(examples, config.train.eval_fraction,
                                                 config.train.max_eval_examples, config.train.seed)
    print(f"interplay: {config.role}: {len(train_set)} training examples, {len(eval_set)} {eval_split} for the "
          f"loss ({data_report['examples']['num_loss_tokens']} loss tokens in all)", file=sys.stderr)
    model = add_lora(load_base(base, bf16=bf16), config)
    scratch = out.with_name(f".{out.name}.tmp")
    if int(os.environ.get("RANK", "0")) == 0:
        shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True, exist_ok=True)
    trainer, summary = fit(config, model, tokenizer, train_set, eval_set, scratch, bf16=bf16)
    summary["eval"]["split"] = eval_split
    if not trainer.is_world_process_zero():
        return summary
    shutil.rmtree(scratch / "trainer", ignore_errors=True)
    model.save_pretrained(str(scratch))
    fp = {"base_model": base, **fingerprint(model.get_base_model().config.to_dict(), tokenizer)}
    (scratch / FINGERPRINT_FILE).write_text(json.dumps(fp, indent=2) + "\n")
    (scratch / "train_config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    (scratch / "data.json").write_text(json.dumps(data_report, indent=2) + "\n")
    write_curve(scratch, summary)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch.rename(out)
    return summary
