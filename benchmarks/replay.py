"""(d) The replay bound: the engine's own throughput on run (a)'s token mix, which no scheduler can beat.

Every request of run (a) is sent again with its exact prompt token ids, forced to the output length it had
(ignore_eos, min_tokens = max_tokens = observed), with the same role (LoRA adapter), sampling and seed, but with
no turn dependencies: as soon as one finishes the next is submitted, in (a)'s submission order, with at most
max_in_flight requests outstanding, the same concurrency as (a). So the engine always has a full batch, and the
tokens are the same as (a)'s.

This needs the engine under a RoleClient (`_engine`, `_lora`: interplay/generator/runtime/engine.py), because a
RoleClient's sampling parameters are fixed per role.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import Request


def engine_of(client: Any) -> Any:
    """The vLLM AsyncLLM under a (recording) RoleClient."""
    inner = getattr(client, "inner", client)
    try:
        return inner._engine
    except AttributeError:
        raise RuntimeError("the replay bound needs interplay.generator.runtime.engine.VllmRoleClient (its _engine)") from None


async def reset_prefix_caches(clients: dict[str, Any]) -> None:
    """Start every variant from a cold prefix cache (the same conversations were generated before)."""
    engines = {id(engine_of(c)): engine_of(c) for c in clients.values()}
    for engine in engines.values():
        await engine.reset_prefix_cache()


async def run_replay(clients: dict[str, Any], requests: Sequence[Request], *, max_in_flight: int,
                     prefix: str = "replay") -> tuple[float, list[Request], int]:
    """Replay `requests`; returns (wall seconds, the replayed requests with what came back, length mismatches)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    semaphore = asyncio.Semaphore(max_in_flight)
    done: list[Request] = []
    mismatches = 0

    async def one(req: Request) -> None:
        nonlocal mismatches
        client = getattr(clients[req.role], "inner", clients[req.role])
        sampling = {k: v for k, v in client.sampling.items() if k not in ("stop", "stop_token_ids", "max_tokens")}
        n = max(req.num_output_tokens, 1)
        params = SamplingParams(**sampling, max_tokens=n, min_tokens=n, ignore_eos=True, seed=req.seed,
                                output_kind=RequestOutputKind.FINAL_ONLY)
        async with semaphore:
            final = None
            async for output in engine_of(client).generate({"prompt_token_ids": list(req.prompt)}, params,
                                                           f"{prefix}-{req.order}", lora_request=client._lora):
                final = output
        got = len(final.outputs[0].token_ids)
        mismatches += got != req.num_output_tokens
        done.append(Request(req.order, req.role, req.prompt, req.seed, len(req.prompt), got,
                            final.num_cached_tokens or 0))

    started = time.perf_counter()
    # Tasks take the semaphore in creation order (asyncio wakes waiters first in, first out).
    await asyncio.gather(*(one(r) for r in requests))
    return time.perf_counter() - started, done, mismatches
