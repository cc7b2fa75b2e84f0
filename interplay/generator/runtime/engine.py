"""The vLLM engine layer: the only module that imports vLLM.

Topologies:
  shared    one AsyncLLM serves both roles; with adapters, one LoRARequest per role on the same base
  separate  one AsyncLLM per role, started one after the other, each with its own engine arguments (memory
            split via gpu_memory_utilization / kv_cache_memory_bytes)

Each role is served through a VllmRoleClient (the scheduler's RoleClient protocol on vLLM): render chat messages
to token ids with the serving tokenizer (tokenising only what a turn added, see dialogue/rendering.py), and
generate one turn (with its per-turn seed under sampling_seeds: per_turn). Prompts go in as token ids, so what we
count is what vLLM sees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

from interplay.common.adapters import AdapterError, check_adapter
from interplay.common.cpu import cpu_auto_dtype
from interplay.common.roles import ROLES
from interplay.generator.config import ConfigError, GenerateConfig
from interplay.generator.dialogue.conversation import Completion
from interplay.generator.dialogue.rendering import PromptCache, PromptRenderer
from interplay.generator.runtime.scheduler import EngineDead


class EngineStartError(RuntimeError):
    """vLLM could not start an engine (not enough memory for the KV cache, a bad engine argument value, ...).
    The root cause is in vLLM's own log lines, which the command line points to."""


def _engine_arg_names() -> set[str]:
    from vllm.engine.arg_utils import AsyncEngineArgs

    return {f.name for f in dataclasses.fields(AsyncEngineArgs)}


def _max_logprobs(engine_args: dict[str, Any]) -> int:
    """The engine's cap on logprobs per token: its argument, else vLLM's own default (20); -1 for no cap."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    default = next(f.default for f in dataclasses.fields(AsyncEngineArgs) if f.name == "max_logprobs")
    return int(engine_args.get("max_logprobs", default))


def check_sampling_values(config: GenerateConfig, role: str, sampling: dict[str, Any]) -> None:
    """Values SamplingParams accepts but a run could not use: the engine would refuse every request (each then
    a failed conversation), or the scheduler could not check the context."""
    if sampling.get("n", 1) != 1:
        raise ConfigError(f"{role}.sampling.n: {sampling['n']}, but a turn takes one completion; drop n")
    if "max_tokens" in sampling and sampling["max_tokens"] is None:
        raise ConfigError(f"{role}.sampling.max_tokens: null, but each prompt is checked against max_model_len "
                          "with it before it is sent; give a number of tokens")
    cap = _max_logprobs(config.engine_args(role))
    where = "engine" if config.topology == "shared" else f"{role}.engine"
    for key in ("logprobs", "prompt_logprobs"):
        value = sampling.get(key)
        if value and cap != -1 and (value == -1 or value > cap):
            raise ConfigError(f"{role}.sampling.{key}: {value} is above the engine's max_logprobs={cap}; "
                              f"lower it, or set {where}.max_logprobs")


def check_config(config: GenerateConfig) -> None:
    """Check engine and sampling keys against vLLM's own classes, before any engine starts."""
    from vllm import SamplingParams

    names = _engine_arg_names()
    for role in ROLES:
        prefix = "engine" if config.topology == "shared" else f"{role}.engine"
        for key in config.engine_args(role):
            if key not in names:
                raise ConfigError(f"{prefix}.{key}: unknown vLLM engine argument")
        sampling = config.sampling(role)
        for key in sampling:
            if key not in SamplingParams.__struct_fields__ or key.startswith("_") or key in ("seed", "output_kind"):
                raise ConfigError(f"{role}.sampling.{key}: unknown or reserved sampling parameter "
                                  "(per-turn seeds: the top-level sampling_seeds)")
        try:
            SamplingParams(**sampling)
        except Exception as e:  # vLLM raises its own VLLMValidationError for bad values
            raise ConfigError(f"{role}.sampling: {e}") from None
        check_sampling_values(config, role, sampling)


BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"


def cpu_thread_binds(config: GenerateConfig, cpus: list[int]) -> dict[str, str]:
    """VLLM_CPU_OMP_THREADS_BIND for each role's engine under `cpu_threads: all`, from the cores this process may
    use; empty when vLLM keeps its own binding (cpu_threads: vllm, or the variable is already set).

    vLLM's own binding keeps a core free for its scheduler process: on a 2-core machine that halves the compute
    (225 instead of 140 output tok/s with SmolLM2, measured here). The scheduler process costs little next to the
    model, so `all` gives the model every core; two engines (topology: separate) get half each, not the same ones.
    """
    if config.cpu_threads != "all" or BIND_ENV in os.environ or not cpus:
        return {}
    if config.topology == "shared":
        return {role: ",".join(map(str, cpus)) for role in ROLES}
    half = max(1, len(cpus) // 2)
    parts = {"user": cpus[:half], "recommender": cpus[half:] or cpus[:half]}
    return {role: ",".join(map(str, part)) for role, part in parts.items()}


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables while vLLM starts an engine (its processes read them when they start)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _engine_args(config: GenerateConfig, role: str) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.platforms import current_platform

    args = config.engine_args(role)
    args.setdefault("disable_log_stats", True)
    if current_platform.is_cpu():
        # vLLM's CPU worker crashes ("CPU Generator does not use offset") when a request with its own seed is
        # split across prefill chunks (every request has one under sampling_seeds: per_turn), so the CPU default
        # schedules whole prompts; under none as well, so that the two settings differ only in the seeds.
        args.setdefault("enable_chunked_prefill", False)
        if args.get("dtype", "auto") == "auto":
            args["dtype"] = cpu_auto_dtype()
    return AsyncEngineArgs(**args)


def check_adapter_fits(config: GenerateConfig, role: str, engine: Any) -> None:
    """An adapter trained by `interplay train` names the base it fits (interplay_base.json); vLLM would load one
    trained on another vocabulary without a word and serve nonsense, so a mismatch stops the run here."""
    adapter = getattr(config, role).adapter
    if not adapter:
        return
    try:
        check_adapter(adapter, config.engine_args(role)["model"], engine.model_config.hf_config.to_dict(),
                      engine.get_tokenizer())
    except AdapterError as e:
        raise ConfigError(f"{role}.adapter: {e}") from None


def kv_cache_tokens(engine: Any) -> int | None:
    """The engine's KV cache in tokens, as sized at its start (its blocks times their size); None if unknown.
    A shared engine's cache holds both roles' histories: each role's client reports the whole of it."""
    cache = getattr(getattr(engine, "vllm_config", None), "cache_config", None)
    if cache is None or not cache.num_gpu_blocks:
        return None
    return int(cache.num_gpu_blocks) * int(cache.block_size)


class VllmRoleClient:
    """One role's view of an engine: its tokenizer, LoRA adapter and sampling parameters."""

    def __init__(self, role: str, engine: Any, model: str, adapter: str | None, lora_id: int,
                 sampling: dict[str, Any]):
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind

        self.role, self.model, self.adapter, self.sampling = role, model, adapter, sampling
        self._engine = engine
        self._renderer = PromptRenderer(engine.get_tokenizer())
        self._lora = LoRARequest(f"{role}-adapter", lora_id, adapter) if adapter else None
        self._params = SamplingParams(**sampling, output_kind=RequestOutputKind.FINAL_ONLY)
        self.max_model_len: int = engine.model_config.max_model_len
        self.max_tokens: int = self._params.max_tokens or 16
        self.kv_cache_tokens = kv_cache_tokens(engine)  # the scheduler's admission cap (policy.KvAdmission)

    def render(self, messages: list[dict[str, str]], cache: PromptCache | None = None) -> list[int]:
        return self._renderer.render(messages, cache)

    async def generate(self, request_id: str, prompt_token_ids: list[int], seed: int | None, *,
                       regex: str | None = None) -> Completion:
        from vllm.sampling_params import StructuredOutputsParams
        from vllm.v1.engine.exceptions import EngineDeadError

        params = self._params.clone()
        if seed is not None:  # None: vLLM's own generator, and no per-request generator in its sampler
            params.seed = seed
        if regex is not None:
            params.structured_outputs = StructuredOutputsParams(regex=regex)
        final = None
        try:
            async for output in self._engine.generate({"prompt_token_ids": prompt_token_ids}, params,
                                                      request_id, lora_request=self._lora):
                final = output
        except EngineDeadError as e:  # vLLM's own message points at a stack trace that is in its log, not here
            raise EngineDead(f"the vLLM engine died (during a {self.role} turn)") from e
        except Exception:
            if self._engine.errored:
                raise EngineDead(f"the vLLM engine died (during a {self.role} turn)") from None
            raise
        out = final.outputs[0]
        return Completion(out.text, len(prompt_token_ids), len(out.token_ids), final.num_cached_tokens or 0,
                          out.finish_reason)


@contextlib.contextmanager
def _sigint_blocked():
    """A Ctrl-C during vLLM's start-up is taken once the start returns (as an interrupt), not half-way through it.

    Processes vLLM forks inherit the block. Those it spawns (the default on CPU and CUDA) start unblocked and set
    their own SIGINT handler, so a Ctrl-C typed in the terminal, which goes to the whole process group, stops the
    engine as well; `kill -INT` to this process alone leaves the engine serving the conversations in flight."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# The watchdog's program: block until its stdin closes. "ok" first means a normal shutdown; a bare end of file
# means the generator died, so it kills the processes it was given ("pid:create_time", never a recycled pid).
_WATCHDOG = """
import sys, psutil
if sys.stdin.buffer.read() != b"ok":
    for arg in sys.argv[1:]:
        pid, created = arg.split(":")
        try:
            proc = psutil.Process(int(pid))
            if repr(proc.create_time()) == created:
                proc.kill()
        except psutil.Error:
            pass
"""


class DieWithUs:
    """Kills this process's children (vLLM's engine processes) if this process dies without shutting them down.

    They do not watch their parent: after a SIGKILL of the generator (kill -9, the OOM killer) they would live on
    with their memory, which a rerun on the same GPU needs. The watchdog is a process of its own, in its own
    session so that a Ctrl-C does not stop it; `release()` tells it all went well."""

    def __init__(self) -> None:
        import psutil  # a vLLM dependency

        targets = [f"{p.pid}:{p.create_time()!r}" for p in psutil.Process().children(recursive=True)]
        self.process = subprocess.Popen([sys.executable, "-c", _WATCHDOG, *targets], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def release(self) -> None:
        self.process.communicate(b"ok")


@contextlib.asynccontextmanager
async def open_engines(config: GenerateConfig) -> AsyncIterator[dict[str, VllmRoleClient]]:
    """Start the engines of the configured topology; shut them down however the block ends."""
    from vllm.platforms import current_platform
    from vllm.v1.engine.async_llm import AsyncLLM

    binds = cpu_thread_binds(config, sorted(os.sched_getaffinity(0))) if current_platform.is_cpu() else {}

    def start(role: str, name: str) -> Any:
        try:
            with _environ({BIND_ENV: binds[role]} if role in binds else {}):
                return AsyncLLM.from_engine_args(_engine_args(config, role))
        except Exception as e:  # vLLM raises RuntimeError, ValueError, ... and logs the cause in the engine core
            raise EngineStartError(f"vLLM could not start {name}: {' '.join(str(e).split())}") from e

    engines: list[Any] = []
    watchdog = None
    try:
        with _sigint_blocked():
            if config.topology == "shared":
                engines.append(start("user", "the engine"))
                by_role = {role: engines[0] for role in ROLES}
            else:
                by_role = {}
                for role in ROLES:  # one after the other: each sizes its memory with the other already resident
                    by_role[role] = start(role, f"the {role} engine")
                    engines.append(by_role[role])
        watchdog = DieWithUs()
        for role in ROLES:
            check_adapter_fits(config, role, by_role[role])
        yield {role: VllmRoleClient(role, by_role[role], config.engine_args(role)["model"],
                                getattr(config, role).adapter, lora_id, config.sampling(role))
               for lora_id, role in enumerate(ROLES, start=1)}
    finally:
        for engine in engines:
            engine.shutdown()
        if watchdog is not None:
            watchdog.release()
