"""The training config: one YAML file (or command-line flags), validated by pydantic before anything loads.

    role: user                       # user (the user simulator) or recommender
    base_model: ~/.cache/interplay/models/smollm2-135m-instruct   # local directory or Hugging Face hub id
    output: out/adapters/user-simulator
    data: {paths: [out/train-corpus], format: auto, outcomes: [accepted, gave_up, max_turns], min_turns: 2,
           catalog: null}
    prompts: {item_noun: movie, accept_marker: "[ACCEPT]", quit_marker: "[QUIT]"}  # as the generation config
    lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: [q_proj, k_proj, v_proj, o_proj]}
    train: {learning_rate: 2.0e-4, epochs: 1, max_steps: null, batch_size: 4, gradient_accumulation_steps: 1,
            max_seq_len: 1024, bf16: auto}

`interplay train --print-config ...` prints the resolved config of a command line, a good start for a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from interplay.generator.config import format_validation_error, set_dotted
from interplay.generator.inputs.cards import DEFAULT_MAX_CARD_CHARS
from interplay.training.errors import TrainingInputError

FORMATS = ("auto", "corpus", "pearl", "redial", "llm-redial", "sharegpt", "messages")
# Outcomes whose turns are all usable: `error` and `bad_reply` end on a failed or empty turn.
DEFAULT_OUTCOMES = ["accepted", "gave_up", "max_turns", "context_limit"]
DEFAULT_BASE_MODEL = "~/.cache/interplay/models/smollm2-135m-instruct"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSettings(_Strict):
    paths: list[str] = Field(min_length=1, description="corpus directories or files (all of one role's data)")
    format: Literal[FORMATS] = Field("auto", description="auto (from the content), or one of "
                                                         + ", ".join(FORMATS[1:]))
    outcomes: list[str] | None = Field(
        default_factory=lambda: list(DEFAULT_OUTCOMES),
        description="interplay corpora: keep dialogues with these outcomes (null: all)")
    min_turns: int = Field(2, ge=1, description="skip dialogues with fewer turns")
    max_dialogues: int | None = Field(None, ge=1, description="use at most this many dialogues")
    catalog: str | None = Field(None, description="ReDial and LLM-REDIAL: target attributes from this catalog's "
                                                  "item whose title the dialogue's accepted or recommended title is")

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class PromptSettings(_Strict):
    """Must match the generation config the adapter will serve with (its `conversation` and `system_prompt`s)."""
    item_noun: str = Field("movie", min_length=1)
    accept_marker: str = Field("[ACCEPT]", min_length=1)
    quit_marker: str = Field("[QUIT]", min_length=1)
    user_system_prompt: str | None = None
    recommender_system_prompt: str | None = None
    num_candidates: int = Field(0, ge=0, description="the recommender is served with this many retrieved catalog "
                                                     "candidates (reference_free): its examples show the same lists")
    item_cards: bool = Field(False, description="the user simulator is served with item cards (user.item_cards): "
                                                "its examples show the same cards, and candidate lists show cards")
    max_card_chars: int = Field(DEFAULT_MAX_CARD_CHARS, ge=20, description="user.max_card_chars of the serving config")
    card_fit: bool = Field(False, description="the user simulator's cards say whether each item fits its target "
                                              "attributes (user.card_fit); its examples show the same")
    catalog: str | None = Field(None, description="the catalog those candidates and cards come from")

    @model_validator(mode="after")
    def _catalog(self) -> PromptSettings:
        for key in ("num_candidates", "item_cards"):
            if getattr(self, key) and not self.catalog:
                raise ValueError(f"prompts.catalog: required with prompts.{key} (the catalog the served roles read)")
        if self.card_fit and not self.item_cards:
            raise ValueError("prompts.card_fit: needs prompts.item_cards (it is said on the cards)")
        return self

    @field_validator("user_system_prompt", "recommender_system_prompt")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        from interplay.generator.dialogue.prompts import check_template

        if v is not None:
            check_template(v)
        return v


class LoraSettings(_Strict):
    r: int = Field(16, ge=1, description="LoRA rank (the serving engine's max_lora_rank must be at least this)")
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    # vLLM serves LoRA on these projections (and on gate/up/down_proj) for Llama-style models.
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                      min_length=1)


class TrainSettings(_Strict):
    learning_rate: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0, description="passes over the data (max_steps wins when set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps in all")
    batch_size: int = Field(4, ge=1, description="examples per device and forward pass")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_seq_len: int = Field(1024, ge=16, description="longer dialogues are cut after the last turn that fits")
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: str = Field("cosine", description="a transformers scheduler name: linear, cosine, constant, ...")
    max_grad_norm: float = Field(1.0, gt=0)
    bf16: bool | Literal["auto"] = Field("auto", description="auto: on a GPU that supports it")
    gradient_checkpointing: bool = False
    logging_steps: int = Field(1, ge=1)
    seed: int = 0
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="dialogues held out to measure the loss")
    max_eval_examples: int = Field(64, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="also measure the held-out loss every this many steps "
                                                           "(the curve that tells how many steps to train)")
    decision_weight: float = Field(
        1.0, ge=1.0, description="the loss on the tokens that carry each turn's decision (its first few tokens, "
                                 "the accept and quit markers) counts this many times as much as the rest; 1: "
                                 "plain cross-entropy. The held-out loss stays plain, so curves compare")


class TrainConfig(_Strict):
    role: Literal["user", "recommender"]
    base_model: str = DEFAULT_BASE_MODEL
    output: str = Field(description="the adapter directory to write")
    data: DataSettings
    prompts: PromptSettings = Field(default_factory=PromptSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)

    @property
    def base_model_path(self) -> str:
        """Expanded local path, or the hub id as given."""
        expanded = os.path.expanduser(os.path.expandvars(self.base_model))
        return expanded if self.base_model.startswith(("/", ".", "~", "$")) or os.path.exists(expanded) \
            else self.base_model


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise TrainingInputError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise TrainingInputError(f"{what} {str(path)!r} cannot be read: {e}") from None
    if not isinstance(data, dict):
        raise TrainingInputError(f"{what} {str(path)!r} must hold a mapping of keys")
    return data


def prompts_from_generation_config(path: str | Path) -> dict[str, Any]:
    """The prompt settings of a generation config (read as YAML, not validated: its adapters may not exist yet)."""
    raw = read_yaml(path, "generation config")
    conv = raw.get("conversation") or {}
    out = {k: conv[k] for k in ("item_noun", "accept_marker", "quit_marker") if conv.get(k) is not None}
    for role in ("user", "recommender"):
        template = (raw.get(role) or {}).get("system_prompt")
        if template is not None:
            out[f"{role}_system_prompt"] = template
    # A reference-free recommender served with retrieved candidates is trained on the same lists, and a user
    # simulator served with item cards on the same cards.
    k = (raw.get("recommender") or {}).get("num_candidates")
    user = raw.get("user") or {}
    if raw.get("protocol", "reference_free") == "reference_free" and k:
        out["num_candidates"] = k
    if user.get("item_cards"):
        out["item_cards"] = True
        if user.get("max_card_chars") is not None:
            out["max_card_chars"] = user["max_card_chars"]
        if user.get("card_fit"):
            out["card_fit"] = True
    if "num_candidates" in out or "item_cards" in out:
        seeds = raw.get("seeds") or {}
        if seeds.get("source", "movielens") == "file":
            out["catalog"] = seeds.get("catalog")
        else:
            from interplay.prepare import prepare_seeds

            out["catalog"] = str(prepare_seeds()[1])  # every MovieLens build holds the same movies
    return out


def load_train_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        raise TrainingInputError(format_validation_error(e, path).replace("invalid config", "invalid training config",
                                                                          1)) from None
