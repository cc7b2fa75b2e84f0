"""A role served by an OpenAI-compatible server that is already running (topology: server), e.g. `make serve`.

The scheduler drives it through the same RoleClient interface as the in-process engine (engine.py): prompts are
rendered here with the served model's tokenizer, exactly as for the in-process engine, and sent to
/v1/completions as token ids, so the server's prefix cache serves each history and the counts are the ones the
server saw (`usage`, with `prompt_tokens_details.cached_tokens` where the server gives it: `vllm serve
--enable-prompt-tokens-details`). A constrained reply carries its regular expression as vLLM's server takes it
(`structured_outputs: {regex: ...}`). No vLLM here: this side needs only httpx.

Failures of one request: a timeout, a connection error, 429 or 5xx is retried with jittered exponential backoff,
up to server.max_retries; after that the conversation fails (failure log, max_attempts), except when the server
cannot be connected to at all any more: then no request can succeed and the run stops, naming the server
(EngineDead, as when an in-process engine dies). Any other 4xx is not retried. The checks before a run are in
server_checks.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from interplay.common.roles import ROLES
from interplay.generator.config import GenerateConfig
from interplay.generator.dialogue.conversation import Completion
from interplay.generator.dialogue.rendering import PromptCache, PromptRenderer
from interplay.generator.runtime.scheduler import EngineDead

MAX_BACKOFF_S = 30.0  # one wait never exceeds this, whatever the attempt
SNIPPET_CHARS = 200   # of a response that is not what it should be, shown in the failure


class ServerRequestError(RuntimeError):
    """One request failed for good: refused (a 4xx), retries used up, or an answer that is not a completion."""


def snippet(text: str) -> str:
    return " ".join(text.split())[:SNIPPET_CHARS]


def is_retryable_status(status: int) -> bool:
    """408 (a timeout), 429 (rate limit, queue full) and 5xx may succeed later; any other 4xx says the same next
    time. Transport errors (timeouts, refused or dropped connections) are retried too."""
    return status in (408, 429) or status >= 500


@dataclass
class RetryPolicy:
    max_retries: int
    backoff_s: float
    rng: random.Random

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds before retry `attempt` (0-based): backoff_s doubling each time, times a jitter in [0.5, 1.5)
        so that conversations failed together do not retry together; a server's Retry-After when longer."""
        wait = self.backoff_s * (2 ** attempt) * (0.5 + self.rng.random())
        with contextlib.suppress(TypeError, ValueError):
            wait = max(wait, float(retry_after))
        return min(wait, MAX_BACKOFF_S)


def completion_body(model: str, prompt_token_ids: list[int], sampling: dict[str, Any], seed: int | None,
                    regex: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "prompt": prompt_token_ids, **sampling, "stream": False}
    if seed is not None:
        body["seed"] = seed
    if regex is not None:
        body["structured_outputs"] = {"regex": regex}
    return body


def parse_completion(response: httpx.Response) -> Completion:
    """The completion in a 200 answer; ServerRequestError with its first characters when it is not one."""
    try:
        data = response.json()
        choice, usage = data["choices"][0], data["usage"]
        details = usage.get("prompt_tokens_details") or {}
        completion = Completion(choice["text"], usage["prompt_tokens"], usage["completion_tokens"],
                                details.get("cached_tokens") or 0, choice.get("finish_reason"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ServerRequestError(f"not a completions response: {snippet(response.text)!r}") from None
    if not (isinstance(completion.text, str) and all(isinstance(n, int) for n in (
            completion.num_prompt_tokens, completion.num_output_tokens, completion.num_cached_tokens))):
        raise ServerRequestError(f"not a completions response: {snippet(response.text)!r}")
    return completion


def describe(error: Exception | httpx.Response) -> str:
    if isinstance(error, httpx.Response):
        return f"status {error.status_code}: {snippet(error.text)}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def post_with_retries(client: httpx.AsyncClient, path: str, body: dict[str, Any], retry: RetryPolicy,
                            *, server: str, during: str) -> httpx.Response:
    """POST until a 200 answer; retries what may succeed later (module docstring)."""
    last: Exception | httpx.Response | None = None
    for attempt in range(retry.max_retries + 1):
        retry_after = None
        try:
            response = await client.post(path, json=body)
        except httpx.TransportError as e:
            last = e
        else:
            if response.status_code == 200:
                return response
            if not is_retryable_status(response.status_code):
                raise ServerRequestError(f"the server at {server} refused it ({describe(response)})")
            last, retry_after = response, response.headers.get("retry-after")
        if attempt < retry.max_retries:
            await asyncio.sleep(retry.delay(attempt, retry_after))
    tries = f"{retry.max_retries + 1} tries"
    if isinstance(last, (httpx.ConnectError, httpx.ConnectTimeout)):  # refused, or no answer to connect at all
        raise EngineDead(f"the server at {server} cannot be reached any more (during a {during}, after {tries}: "
                         f"{describe(last)})")
    raise ServerRequestError(f"the server at {server} did not answer it after {tries} ({describe(last)})")


class ServerRoleClient:
    """One role's view of a server: the served model (or adapter) name, its tokenizer and sampling parameters."""

    def __init__(self, role: str, http: httpx.AsyncClient, settings: dict[str, Any], tokenizer: Any,
                 sampling: dict[str, Any], *, max_model_len: int, kv_cache_tokens: int | None,
                 rng: random.Random | None = None):
        self.role, self.sampling = role, sampling
        self.model: str = settings["model"]  # the records' <role>_model
        self.adapter = None  # a server's adapter is named by model
        self.server: str = settings["base_url"]
        self.max_model_len = max_model_len
        self.max_tokens: int = sampling.get("max_tokens") or 16
        self.kv_cache_tokens = kv_cache_tokens  # the admission cap's input (policy.KvAdmission); None: unknown
        self._http = http
        self._renderer = PromptRenderer(tokenizer)
        self._retry = RetryPolicy(settings["max_retries"], settings["backoff_s"], rng or random.Random())

    def render(self, messages: list[dict[str, str]], cache: PromptCache | None = None) -> list[int]:
        return self._renderer.render(messages, cache)

    async def generate(self, request_id: str, prompt_token_ids: list[int], seed: int | None, *,
                       regex: str | None = None) -> Completion:
        body = completion_body(self.model, prompt_token_ids, self.sampling, seed, regex)
        response = await post_with_retries(self._http, "/v1/completions", body, self._retry, server=self.server,
                                           during=f"{self.role} turn")
        return parse_completion(response)


def http_client(settings: dict[str, Any], max_connections: int) -> httpx.AsyncClient:
    """One connection per request in flight (the scheduler keeps at most max_in_flight); a request waits for the
    server's answer up to timeout_s, never for a free connection."""
    from interplay.generator.runtime.server_checks import api_key, root_url

    headers = {"Authorization": f"Bearer {key}"} if (key := api_key(settings)) else {}
    timeout = httpx.Timeout(settings["timeout_s"], connect=min(10.0, settings["timeout_s"]), pool=None)
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(base_url=root_url(settings["base_url"]), headers=headers, timeout=timeout,
                             limits=limits)


@contextlib.asynccontextmanager
async def open_servers(config: GenerateConfig) -> AsyncIterator[dict[str, ServerRoleClient]]:
    """The role clients of topology: server, each server checked first (server_checks.py); closed however the
    block ends. Roles on the same server share its connections."""
    from interplay.generator.runtime.server_checks import check_servers

    served = await asyncio.to_thread(check_servers, config)
    clients: dict[str, httpx.AsyncClient] = {}
    try:
        by_role = {}
        for role in ROLES:
            settings = config.server_settings(role)
            key = json.dumps([settings["base_url"], settings["api_key_env"], settings["timeout_s"]])
            if key not in clients:
                clients[key] = http_client(settings, max_connections=config.max_in_flight)
            by_role[role] = ServerRoleClient(role, clients[key], settings, served[role].tokenizer,
                                             config.sampling(role), max_model_len=served[role].max_model_len,
                                             kv_cache_tokens=served[role].kv_cache_tokens)
        yield by_role
    finally:
        for client in clients.values():
            await client.aclose()
