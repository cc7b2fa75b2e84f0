"""The checks of topology: server before a run: each problem one message (ServerError, exit 2), before the output
is opened and before any conversation starts.

    local       sampling keys that /v1/completions takes; the API key's environment variable is set
    reachable   GET /v1/models answers, with a list of models (and the API key is accepted)
    model       server.model is among them (a LoRA adapter served with --lora-modules is listed by its name)
    tokenizer   the server's /tokenize and ours agree on a probe prompt, so the ids sent are the ids it expects
    probe       a one-token completion with the role's sampling (and a regular expression where the protocol
                constrains the role's replies): a 4xx that would refuse every request shows up here
    facts       max_model_len (from /v1/models), the KV cache size (vllm:cache_config_info in /metrics, where
                served), the model's root and parent: the scheduler and the corpus identity use them

Run as `check_servers(config)` (the run's Generation, and open_servers). Only httpx here, no vLLM.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from interplay.common.roles import ROLES
from interplay.generator.config import GenerateConfig

# SamplingParams names that /v1/completions also takes under the same name (vLLM's CompletionRequest); a server
# ignores a key it does not know without a word, so any other key is refused here. seed comes per turn.
COMPLETION_SAMPLING = frozenset((
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "min_tokens", "stop", "stop_token_ids",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "length_penalty", "logprobs", "prompt_logprobs",
    "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output",
    "bad_words", "allowed_token_ids", "logit_bias", "truncate_prompt_tokens", "n"))
PROBE_MESSAGES = [{"role": "system", "content": "You recommend movies."},
                  {"role": "user", "content": "Something like Heat (1995), or a 1970s crime film? Ça marche."}]
PROBE_REGEX = "[A-Za-z ]{1,8}"
PROBE_TIMEOUT_S = 120.0  # a probe on a busy server: one token, but behind its queue
_CACHE_INFO = re.compile(r"^vllm:cache_config_info\{([^}]*)\}", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


class ServerError(ValueError):
    """A server check before the run failed; the message names the setting and the server."""


@dataclass
class Served:
    """What a role's server reports about what it serves."""
    model: str
    root: str | None = None              # the model's files as the server names them (an adapter's, for LoRA)
    parent: str | None = None            # for a LoRA adapter: the base model it is served on
    parent_root: str | None = None       # ... and that base model's files
    max_model_len: int = 0
    kv_cache_tokens: int | None = None   # None: the server does not say (no /metrics)
    tokenizer: Any = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)


def root_url(base_url: str) -> str:
    """The server's root: /v1 is added per request (/tokenize and /metrics live at the root)."""
    return base_url.rstrip("/").removesuffix("/v1")


def where(config: GenerateConfig, role: str, key: str) -> str:
    """The config key that set `key` for `role`: the role's own server section, else the top-level one."""
    own = getattr(config, role).server
    return f"{role}.server.{key}" if own is not None and getattr(own, key) is not None else f"server.{key}"


def api_key(settings: dict[str, Any]) -> str | None:
    name = settings.get("api_key_env")
    return os.environ.get(name) if name else None


def check_local(config: GenerateConfig) -> None:
    """What needs no server: sampling keys the completions API takes, and the API keys' variables."""
    for role in ROLES:
        sampling = config.sampling(role)
        for key in sampling:
            if key not in COMPLETION_SAMPLING:
                raise ServerError(f"{role}.sampling.{key}: not a sampling parameter of /v1/completions (a server "
                                  "ignores it without a word)" + ("; per-turn seeds: the top-level "
                                                                 "sampling_seeds" if key == "seed" else ""))
        if sampling.get("n", 1) != 1:
            raise ServerError(f"{role}.sampling.n: {sampling['n']}, but a turn takes one completion; drop n")
        if not isinstance(sampling.get("max_tokens"), int):
            raise ServerError(f"{role}.sampling.max_tokens: {sampling.get('max_tokens')!r}; give a number of tokens")
        settings = config.server_settings(role)
        if (name := settings["api_key_env"]) and not os.environ.get(name):
            raise ServerError(f"{where(config, role, 'api_key_env')}: the environment variable {name} is not set "
                              "(it should hold the server's API key)")


def check_servers(config: GenerateConfig) -> dict[str, Served]:
    """Every check of the module docstring, per role. Returns what each role's server reports."""
    import httpx

    check_local(config)
    served = {}
    for role in ROLES:
        settings = config.server_settings(role)
        headers = {"Authorization": f"Bearer {k}"} if (k := api_key(settings)) else {}
        with httpx.Client(base_url=root_url(settings["base_url"]), headers=headers,
                          timeout=min(PROBE_TIMEOUT_S, settings["timeout_s"])) as http:
            served[role] = _check_role(config, role, settings, http)
    return served


def _call(http: Any, method: str, path: str, settings: dict[str, Any], what: str, **kwargs: Any) -> Any:
    """The response, or ServerError when the server cannot be reached or does not answer in time."""
    import httpx

    try:
        return http.request(method, path, **kwargs)
    except httpx.TransportError as e:
        raise ServerError(f"{what}: cannot reach the server at {settings['base_url']} ({type(e).__name__}: {e}); "
                          "start it (make serve) or fix the address") from None


def _answer(response: Any, server: str, what: str, settings: dict[str, Any]) -> Any:
    from interplay.generator.runtime.server import snippet

    if response.status_code in (401, 403):
        source = f"from ${settings['api_key_env']}" if settings["api_key_env"] else "none given: server.api_key_env"
        raise ServerError(f"{what}: the server at {server} refuses the API key ({source}): status "
                          f"{response.status_code}")
    if response.status_code != 200:
        raise ServerError(f"{what}: the server at {server} answered status {response.status_code}: "
                          f"{snippet(response.text)}")
    try:
        return response.json()
    except ValueError:
        raise ServerError(f"{what}: the server at {server} is not an OpenAI-compatible server (its answer: "
                          f"{snippet(response.text)!r})") from None


def _check_role(config: GenerateConfig, role: str, settings: dict[str, Any], http: Any) -> Served:
    server, model = settings["base_url"], settings["model"]
    what = where(config, role, "base_url")
    models = _answer(_call(http, "GET", "/v1/models", settings, what), server, what, settings)
    cards = {c.get("id"): c for c in models.get("data", []) if isinstance(c, dict)} if isinstance(models, dict) \
        else {}
    if model not in cards:
        raise ServerError(f"{where(config, role, 'model')}: {model!r} is not served at {server} (it serves: "
                          f"{', '.join(map(str, cards)) or 'nothing'})")
    card = cards[model]
    parent = cards.get(card.get("parent")) or {}
    max_model_len = card.get("max_model_len") or parent.get("max_model_len")
    if not isinstance(max_model_len, int):
        raise ServerError(f"{where(config, role, 'base_url')}: the server at {server} does not say the "
                          f"max_model_len of {model!r} in /v1/models, which every prompt is checked against")
    served = Served(model, card.get("root"), card.get("parent"), parent.get("root"), max_model_len)
    max_tokens = config.sampling(role)["max_tokens"]
    if max_tokens >= max_model_len:
        raise ServerError(f"{role}.sampling.max_tokens: {max_tokens} leaves no room for a prompt in the server's "
                          f"max_model_len {max_model_len}")
    served.tokenizer = _load_tokenizer(config, role, settings)
    ids = _check_tokenizer(config, role, settings, http, served)
    _probe(config, role, settings, http, ids, None)
    # The protocol's constrained replies: a server without structured outputs refuses them here, not per turn.
    if config.constrain_user_replies if role == "user" else config.constrain_to_candidates:
        _probe(config, role, settings, http, ids, PROBE_REGEX)
    served.kv_cache_tokens = _kv_cache_tokens(http)
    return served


def _load_tokenizer(config: GenerateConfig, role: str, settings: dict[str, Any]) -> Any:
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(settings["tokenizer"])
    except Exception as e:  # OSError for a missing directory, ValueError, ... whatever transformers raises
        raise ServerError(f"{where(config, role, 'tokenizer')}: cannot load the tokenizer {settings['tokenizer']!r} "
                          f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); give the served model's "
                          "directory or hub id") from None


def _check_tokenizer(config: GenerateConfig, role: str, settings: dict[str, Any], http: Any,
                     served: Served) -> list[int]:
    """Our rendering of the probe prompt, after the server tokenized its text to the same ids."""
    from interplay.generator.dialogue.rendering import PromptRenderer

    ids = PromptRenderer(served.tokenizer).full(PROBE_MESSAGES)
    text = served.tokenizer.apply_chat_template(PROBE_MESSAGES, tokenize=False, add_generation_prompt=True)
    server, what = settings["base_url"], where(config, role, "tokenizer")
    response = _call(http, "POST", "/tokenize", settings, what,
                     json={"model": settings["model"], "prompt": text, "add_special_tokens": False})
    if response.status_code == 404:  # not vLLM: nothing to compare with
        served.notes.append(f"the server at {server} has no /tokenize: its tokenizer is not checked against "
                            f"{settings['tokenizer']}")
        return ids
    theirs = _answer(response, server, what, settings)
    if not isinstance(theirs, dict) or theirs.get("tokens") != ids:
        got = theirs.get("tokens") if isinstance(theirs, dict) else theirs
        raise ServerError(f"{what}: {settings['tokenizer']!r} does not tokenize a probe prompt as the server at "
                          f"{server} does ({len(ids)} ids here, {len(got) if isinstance(got, list) else got!r} "
                          "there): give the served model's tokenizer")
    return ids


def _probe(config: GenerateConfig, role: str, settings: dict[str, Any], http: Any, ids: list[int],
           regex: str | None) -> None:
    """A one-token completion with the role's sampling: what the server would refuse every time, refused now."""
    from interplay.generator.runtime.server import ServerRequestError, completion_body, parse_completion

    server = settings["base_url"]
    body = completion_body(settings["model"], ids, {**config.sampling(role), "max_tokens": 1}, None, regex)
    what = f"{role}.sampling" + (" (its constrained replies)" if regex else "")
    response = _call(http, "POST", "/v1/completions", settings, what, json=body)
    _answer(response, server, what, settings)
    try:
        parse_completion(response)
    except ServerRequestError as e:
        raise ServerError(f"{what}: the server at {server} answers a probe request with {e}") from None


def _kv_cache_tokens(http: Any) -> int | None:
    """The server's KV cache in tokens, from vLLM's vllm:cache_config_info gauge; None where it is not served."""
    import httpx

    try:
        response = http.get("/metrics")
    except httpx.TransportError:
        return None
    match = _CACHE_INFO.search(response.text) if response.status_code == 200 else None
    if match is None:
        return None
    labels = dict(_LABEL.findall(match.group(1)))
    try:
        return int(labels["num_gpu_blocks"]) * int(labels["block_size"])
    except (KeyError, ValueError):
        return None
