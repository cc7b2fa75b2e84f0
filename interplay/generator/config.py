"""The generation config: one YAML file, validated by pydantic before any engine starts.

    protocol: reference_free      # or reference: the teacher, whose user simulator knows the target
    topology: shared              # shared: one engine serves both roles; separate: one engine per role;
                                  # server: each role is served by an OpenAI-compatible server already running
    engine: {model: ..., max_model_len: 2048}   # vLLM engine arguments (AsyncEngineArgs), passed through
    server: {base_url: http://127.0.0.1:8000, model: ..., tokenizer: ...}   # topology: server (docs/server.md)
    user:        {engine: {}, adapter: null, sampling: {temperature: 0.9, max_tokens: 96}}
    recommender: {engine: {}, adapter: null, sampling: {...}, num_candidates: 5}
    seeds: {source: movielens}    # or {source: file, path: seeds.parquet, catalog: catalog.parquet}
    conversation: {max_turns: 10}
    sampling_seeds: none          # or per_turn: each request carries a seed of (seed, conversation, turn)
    max_in_flight: 64
    dialogues_per_shard: 100
    max_attempts: 3               # a conversation whose request failed is retried by reruns, up to this many tries
    num_dialogues: 200
    cpu_threads: vllm             # CPU engines: vllm's thread binding (one core kept free), or all cores

Engine and sampling keys are checked against vLLM's own AsyncEngineArgs / SamplingParams by the engine layer,
so every vLLM option works without being re-declared here.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from interplay.common.roles import ROLES
from interplay.generator.inputs.cards import DEFAULT_MAX_CARD_CHARS

# Keys that change how fast a run goes or how much memory it takes, not which dialogues it produces: left out of
# the config hash, so a rerun may change them (after "KV cache too large", say), and --num-dialogues may grow a
# corpus. Each run records its own values in the manifest. An allow-list: every other key, including any added
# later, is part of the hash.
RUNTIME_KEYS = ("num_dialogues", "max_in_flight", "dialogues_per_shard", "cpu_threads", "max_attempts")
# Keys that only describe the corpus (its dataset card: generator/output/card.py): left out of the hash too.
CARD_KEYS = ("license",)
# The same for vLLM engine arguments, in `engine` and in each role's `engine`.
RUNTIME_ENGINE_KEYS = ("kv_cache_memory_bytes", "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens",
                       "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "swap_space",
                       "enforce_eager", "disable_log_stats")
# The same for the server settings, in `server` and in each role's `server`: where the server is and how patiently
# it is asked, not what it serves (a server restarted on another port resumes the same corpus).
RUNTIME_SERVER_KEYS = ("base_url", "api_key_env", "timeout_s", "max_retries", "backoff_s")
# vLLM's own default max_tokens is 16, far too short for a turn.
DEFAULT_SAMPLING = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 128}


class ConfigError(ValueError):
    """A config problem; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _expand(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(path))


def _looks_local(path: str) -> bool:
    # "org/name" is a Hugging Face hub id; anything absolute, relative-with-dot or home-relative is a local path.
    return path.startswith(("/", ".", "~")) or path.count("/") >= 2 or os.path.exists(path)


class ServerConfig(_Strict):
    """An OpenAI-compatible server that serves a role (topology: server). Every field may be set in the top-level
    `server` for both roles and overridden in a role's `server`; unset fields take the defaults below."""
    base_url: str | None = Field(None, description="the server's address, e.g. http://127.0.0.1:8000 (a trailing "
                                                   "/v1 is accepted)")
    model: str | None = Field(None, description="the served model name the requests name; with per-role LoRA on one "
                                                "server (vllm serve --lora-modules NAME=PATH), the role's adapter name")
    tokenizer: str | None = Field(None, description="the served model's tokenizer, a local directory or hub id: "
                                                    "prompts are rendered here with its chat template and sent as "
                                                    "token ids. Default: model")
    api_key_env: str | None = Field(None, description="the environment variable that holds the API key (never the "
                                                      "key itself); default: no key")
    timeout_s: float | None = Field(None, gt=0, description="seconds one request may take (default 600)")
    max_retries: int | None = Field(None, ge=0, description="retries of a request that timed out, could not connect "
                                                            "or got 429 or 5xx (default 5)")
    backoff_s: float | None = Field(None, ge=0, description="the first retry's mean wait; each next one doubles, "
                                                            "with jitter (default 1)")

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {v!r})")
        return v


# What a role's server settings are when neither `server` nor the role's `server` sets them.
SERVER_DEFAULTS = {"api_key_env": None, "timeout_s": 600.0, "max_retries": 5, "backoff_s": 1.0}


class RoleConfig(_Strict):
    engine: dict[str, Any] = Field(
        default_factory=dict, description="engine arguments for this role's own engine (topology: separate only)")
    server: ServerConfig | None = Field(None, description="this role's server (topology: server): overrides the "
                                                          "top-level server's fields")
    adapter: str | None = Field(None, description="PEFT LoRA adapter directory served for this role")
    sampling: dict[str, Any] = Field(default_factory=dict, description="vLLM SamplingParams for this role's turns")
    system_prompt: str | None = Field(None, description="replaces the built-in system prompt template")

    @field_validator("adapter")
    @classmethod
    def _adapter_exists(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = _expand(v)
        if not (Path(v) / "adapter_config.json").is_file():
            raise ValueError(f"no LoRA adapter at {v!r} (adapter_config.json not found)")
        return v

    @field_validator("system_prompt")
    @classmethod
    def _template_placeholders(cls, v: str | None) -> str | None:
        # Rendered per conversation inside the scheduler: a bad placeholder must fail here, before engines start.
        from interplay.generator.dialogue.prompts import check_template

        if v is not None:
            check_template(v)
        return v

    @property
    def adapter_rank(self) -> int | None:
        if self.adapter is None:
            return None
        return int(json.loads((Path(self.adapter) / "adapter_config.json").read_text()).get("r", 0))


class UserConfig(RoleConfig):
    item_cards: bool = Field(
        False, description="after each recommender message the user simulator reads the card of every catalog item "
                           "it names (title, year, attribute values), and the recommender's candidate lists show "
                           "the same cards; the catalog needs attributes")
    max_card_chars: int = Field(DEFAULT_MAX_CARD_CHARS, ge=20,
                                description="longer cards are cut (the run says how many)")
    card_fit: bool = Field(
        False, description="each card the user simulator reads also says whether the item fits its target "
                           "attributes, and what it lacks if not (the report's rule; inputs/cards.py); needs "
                           "item_cards")
    constrain_replies: bool | None = Field(
        None, description="reference only: each reply must say what the protocol asks (vLLM structured outputs): "
                          "the opening names a wanted attribute value, a rejection names a wanted value the "
                          "suggestion lacks, the reply to the target ends with the accept marker. Default: on "
                          "under reference")


class RecommenderConfig(RoleConfig):
    num_candidates: int | None = Field(
        None, ge=0, description="catalog items shown to the recommender before each of its turns. reference_free: "
                                "the k items that best match what the user said so far (BM25; default 0, none); "
                                "reference: the target and k-1 distractors, or the k retrieved items "
                                "(recommender.suggest_from; default 5)")
    reply_openers: list[str] | None = Field(
        None, description="each recommender reply starts with one of these (chosen per conversation and turn), "
                          "so a small model names an item instead of talking around it; [] for none. Default: "
                          "none under reference_free, a few plain openers under reference")
    constrain_to_candidates: bool | None = Field(
        None, description="each reply must name one of the candidates it was shown (vLLM structured outputs: a "
                          "regular expression over the reply); default: under reference only")
    suggest_from: Literal["shortlist", "retrieved"] | None = Field(
        None, description="reference only: what the teacher's recommender suggests, one item a turn. shortlist: "
                          "the target and k-1 distractors that do not fit (the user accepts the target); "
                          "retrieved: the best of the k items retrieval shows for the user's words, as a "
                          "reference-free recommender with k candidates is shown them (the user accepts the first "
                          "suggestion that fits its target attributes). Default: shortlist")


class SeedsConfig(_Strict):
    source: Literal["movielens", "file"] = "movielens"
    path: str | None = Field(None, description="seeds file (.parquet or .jsonl), source: file")
    catalog: str | None = Field(None, description="catalog file (.parquet or .jsonl), source: file")
    targets_per_user: int = Field(50, ge=1, description="MovieLens: held-out targets per user")
    min_target_rating: float = Field(4.0, ge=0.5, le=5.0, description="MovieLens: a target's minimum rating")
    max_summary_chars: int = Field(4000, ge=1, description="longer preference summaries are skipped")

    @model_validator(mode="after")
    def _files(self) -> SeedsConfig:
        if self.source == "file":
            for name in ("path", "catalog"):
                value = getattr(self, name)
                if value is None:
                    raise ValueError(f"seeds.{name}: required with source: file")
                if not Path(_expand(value)).is_file():
                    raise ValueError(f"seeds.{name}: file {value!r} does not exist")
        return self


class ConversationConfig(_Strict):
    max_turns: int = Field(10, ge=2, le=200, description="turns in all, user and recommender together")
    item_noun: str = Field("movie", min_length=1, description="what is recommended, used in the prompts")
    accept_marker: str = Field("[ACCEPT]", min_length=1, description="the user simulator emits it to accept")
    quit_marker: str = Field("[QUIT]", min_length=1, description="the user simulator emits it to give up")


PROTOCOLS = ("reference_free", "reference")
# Candidates the recommender is shown when recommender.num_candidates is not set.
DEFAULT_NUM_CANDIDATES = {"reference_free": 0, "reference": 5}


class GenerateConfig(_Strict):
    protocol: Literal["reference_free", "reference"] = Field(
        "reference_free", description="reference_free: nothing of the target reaches a prompt (the method); "
                                      "reference: the user simulator is told whether each suggestion is the target "
                                      "and the recommender picks from a shortlist holding it (teacher dialogues "
                                      "to train on)")
    topology: Literal["shared", "separate", "server"] = Field(
        "shared", description="shared: one in-process vLLM engine serves both roles; separate: one per role; server: "
                              "each role is served by an OpenAI-compatible server already running (server)")
    engine: dict[str, Any] = Field(default_factory=dict, description="vLLM engine arguments (all engines)")
    server: ServerConfig | None = Field(None, description="the server of both roles (topology: server); a role's "
                                                          "own `server` overrides its fields")
    user: UserConfig = Field(default_factory=UserConfig)
    recommender: RecommenderConfig = Field(default_factory=RecommenderConfig)
    seeds: SeedsConfig = Field(default_factory=SeedsConfig)
    conversation: ConversationConfig = Field(default_factory=ConversationConfig)
    seed: int = Field(0, description="run seed: the reference protocol's shortlists and, with sampling_seeds: "
                                     "per_turn, each request's sampling seed derive from it")
    # Default none: per-turn seeds cost about a fifth of the output tok/s on the CPU engine (benchmarks/seeds.py,
    # docs/configuration.md), for a reproducibility that vLLM does not guarantee.
    sampling_seeds: Literal["none", "per_turn"] = Field(
        "none", description="none: requests carry no seed, and vLLM samples them from its own generator; "
                            "per_turn: each request carries a seed derived from (seed, conversation, turn), so the "
                            "same run repeated the same way can repeat its text. Neither makes regenerated text "
                            "identical (vLLM's seeded sampling is not batch-invariant)")
    num_dialogues: int = Field(200, ge=1, description="the first N conversations of the run's order")
    max_in_flight: int = Field(64, ge=1, description="conversations active at once")
    dialogues_per_shard: int = Field(100, ge=1, description="rows per Parquet shard")
    max_attempts: int = Field(
        3, ge=1, description="runs that try a conversation whose request failed (outcome error): until then it is "
                             "not done and each rerun generates it again; the attempt that reaches this is kept as "
                             "an error row")
    cpu_threads: Literal["vllm", "all"] = Field(
        "vllm", description="CPU engines only. vllm: vLLM's own thread binding, which keeps one core free for its "
                            "scheduler process; all: the engine's threads use every core this process may run on "
                            "(split between the two engines of topology: separate)")
    license: str | None = Field(
        None, description="the corpus's license, as its dataset card (README.md) gives it to the Hugging Face Hub "
                          "(a Hub license id, e.g. cc-by-4.0); default: unknown. Not part of the config hash")

    @model_validator(mode="after")
    def _engines(self) -> GenerateConfig:
        if self.topology == "server":
            return self._servers()
        for where in ("server", *(f"{r}.server" for r in ROLES)):
            if self._section(where) is not None:
                raise ValueError(f"{where}: set, but topology is {self.topology}; a server serves the roles "
                                 "only under topology: server")
        for role in ROLES:
            rc: RoleConfig = getattr(self, role)
            if self.topology == "shared" and rc.engine:
                raise ValueError(f"{role}.engine: set, but topology is shared: per-role engines need "
                                 "topology: separate (or move the arguments to the top-level engine)")
            args = self.engine_args(role)
            model, field = args.get("model"), "engine.model" if self.topology == "shared" else f"{role}.engine.model"
            if not model:
                raise ValueError(f"{field}: required")
            if _looks_local(model) and not (Path(model) / "config.json").is_file():
                raise ValueError(f"{field}: model {model!r} does not exist (no config.json there); "
                                 "run `interplay prepare` for the embedded default")
            if rc.adapter is not None and args.get("enable_lora") is False:
                where = f"{role}.engine" if "enable_lora" in rc.engine else "engine"
                raise ValueError(f"{role}.adapter: set, but {where}.enable_lora is false, so the engine could not "
                                 "serve it; drop enable_lora: false (it is derived from the adapters)")
            rank, max_rank = rc.adapter_rank, int(args.get("max_lora_rank", 16))
            if rank is not None and rank > max_rank:
                raise ValueError(f"{role}.adapter: rank {rank} is above max_lora_rank={max_rank}; "
                                 f"set engine.max_lora_rank: {rank}")
        return self._protocol_settings()

    def _servers(self) -> GenerateConfig:
        """topology: server: every role has a server and a model, and nothing here would start an engine."""
        for where in ("engine", *(f"{r}.engine" for r in ROLES)):
            if self._section(where):
                raise ValueError(f"{where}: set, but topology is server: the server's own flags decide its "
                                 "engine (drop the vLLM engine arguments)")
        for role in ROLES:
            if getattr(self, role).adapter is not None:
                raise ValueError(f"{role}.adapter: set, but topology is server: the server serves the adapter "
                                 f"(vllm serve --lora-modules NAME=PATH); name it in {role}.server.model")
            settings = self.server_settings(role)
            for key in ("base_url", "model"):
                if not settings[key]:
                    raise ValueError(f"server.{key}: required with topology: server (or {role}.server.{key})")
        return self._protocol_settings()

    def _section(self, where: str) -> Any:
        node: Any = self
        for name in where.split("."):
            node = getattr(node, name)
        return node

    def server_settings(self, role: str) -> dict[str, Any]:
        """The server settings of `role` (topology: server): its own `server` over the top-level one, over the
        defaults; the tokenizer defaults to the model."""
        merged = dict(SERVER_DEFAULTS)
        for section in (self.server, getattr(self, role).server):
            if section is not None:
                merged.update(section.model_dump(exclude_none=True))
        merged.setdefault("base_url", None)
        merged.setdefault("model", None)
        if isinstance(merged.get("tokenizer"), str):
            merged["tokenizer"] = _expand(merged["tokenizer"])
        else:
            merged["tokenizer"] = merged["model"]
        return merged

    def _protocol_settings(self) -> GenerateConfig:
        template = self.user.system_prompt
        if self.protocol == "reference_free" and template is not None and "{target}" in template:
            raise ValueError("user.system_prompt: {target} is only for protocol: reference; a reference-free user "
                             "simulator never knows the target")
        if self.protocol == "reference_free" and self.user.constrain_replies:
            raise ValueError("user.constrain_replies: only for protocol: reference; its acceptance follows the "
                             "target, which a reference-free user simulator never knows")
        if self.protocol == "reference_free" and self.recommender.suggest_from is not None:
            raise ValueError("recommender.suggest_from: only for protocol: reference; a reference-free recommender "
                             "picks from its candidates itself")
        if self.user.card_fit and not self.user.item_cards:
            raise ValueError("user.card_fit: says whether each item card fits, so it needs user.item_cards: true")
        if self.protocol == "reference" and self.num_candidates < 1:
            raise ValueError("recommender.num_candidates: the reference protocol shows the target among the "
                             "candidates, so it needs at least 1")
        return self

    def engine_args(self, role: str) -> dict[str, Any]:
        """The engine arguments for the engine serving `role`, LoRA settings derived from the adapters (none under
        topology: server, where no engine starts here)."""
        if self.topology == "server":
            return {}
        args = {**self.engine, **getattr(self, role).engine}
        if isinstance(args.get("model"), str):
            args["model"] = _expand(args["model"])
        served = [r for r in ROLES if getattr(self, r).adapter] if self.topology == "shared" else (
            [role] if getattr(self, role).adapter else [])
        if served:
            args.setdefault("enable_lora", True)
            args.setdefault("max_loras", max(2, len(served)))
            ranks = [getattr(self, r).adapter_rank for r in served]
            args.setdefault("max_lora_rank", max(16, *ranks))
        return args

    @property
    def num_candidates(self) -> int:
        """Catalog items shown to the recommender before each turn (0: none)."""
        k = self.recommender.num_candidates
        return DEFAULT_NUM_CANDIDATES[self.protocol] if k is None else k

    @property
    def reply_openers(self) -> list[str]:
        from interplay.generator.dialogue.prompts import DEFAULT_OPENERS

        openers = self.recommender.reply_openers
        if openers is None:
            return list(DEFAULT_OPENERS) if self.protocol == "reference" else []
        return [o for o in openers if o.strip()]

    @property
    def constrain_to_candidates(self) -> bool:
        on = self.recommender.constrain_to_candidates
        return (self.protocol == "reference" if on is None else on) and self.num_candidates > 0

    @property
    def suggests_retrieved(self) -> bool:
        """Does the teacher's recommender suggest from retrieved candidates (not from a shortlist)?"""
        return self.protocol == "reference" and self.recommender.suggest_from == "retrieved"

    @property
    def constrain_user_replies(self) -> bool:
        on = self.user.constrain_replies
        return self.protocol == "reference" if on is None else on

    @property
    def sampling_run_seed(self) -> int | None:
        """What per-turn sampling seeds derive from (dialogue/conversation.py turn_seed); None: no seeds."""
        return self.seed if self.sampling_seeds == "per_turn" else None

    def sampling(self, role: str) -> dict[str, Any]:
        return {**DEFAULT_SAMPLING, **getattr(self, role).sampling}

    def hash(self) -> str:
        """Hash of every config key that decides which dialogues come out (all but the runtime and card keys). The
        files the config names are fingerprinted by content apart (generator/runtime/identity.py)."""
        data = self.model_dump(mode="json", exclude={*RUNTIME_KEYS, *CARD_KEYS})
        for node in (data, *(data[r] for r in ROLES)):  # unset: the hash of a config from before servers
            if node.get("server") is None:
                node.pop("server", None)
        for engine in _engine_sections(data):
            for key in RUNTIME_ENGINE_KEYS:
                engine.pop(key, None)
        for server in _sections(data, "server"):
            for key in RUNTIME_SERVER_KEYS:
                server.pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def runtime_settings(self) -> dict[str, Any]:
        """The keys the hash leaves out, as this run sets them (recorded per run in the manifest)."""
        data = self.model_dump(mode="json")
        settings = {key: data[key] for key in RUNTIME_KEYS}
        for where, engine in zip(("engine", *(f"{r}.engine" for r in ROLES)), _engine_sections(data)):
            settings.update({f"{where}.{k}": engine[k] for k in RUNTIME_ENGINE_KEYS if k in engine})
        for where, server in zip(("server", *(f"{r}.server" for r in ROLES)), _sections(data, "server")):
            settings.update({f"{where}.{k}": server[k] for k in RUNTIME_SERVER_KEYS if server.get(k) is not None})
        return settings


def _engine_sections(data: dict[str, Any]) -> list[dict[str, Any]]:
    return _sections(data, "engine")


def _sections(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The top-level section `name` and each role's, as dumped ({} where unset)."""
    return [data.get(name) or {}, *((data.get(r) or {}).get(name) or {} for r in ROLES)]


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, making sections on the way (the --set of every command)."""
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`key.sub=value`, the value read as YAML (so numbers, booleans, lists and null work)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. user.sampling.temperature=0.7")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({e})") from None


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> GenerateConfig:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys")
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    try:
        return GenerateConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, path)) from None


def format_validation_error(error: ValidationError, path: str | Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = []
    for err in error.errors():
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        bad = "" if err["type"] in ("missing", "value_error") else f" (got {err.get('input')!r})"
        # Checks that span several fields name their field at the start of the message themselves.
        lines.append(f"{field}: {msg}{bad}" if field else f"{msg}{bad}")
    return f"invalid config{where}:\n  " + "\n  ".join(lines)
