"""(a) This project's interleaved scheduler, timed: a real run (Generation) on already-open engines, every
request recorded for the replay bound (d). (c) is the same run with max_in_flight=1 (sequential.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from benchmarks.common import Request, recording
from interplay.generator.config import GenerateConfig


def opened(clients: dict[str, Any]) -> Any:
    """`open_engines` for Generation.run that hands over engines started once for all variants."""

    @contextlib.asynccontextmanager
    async def open_engines(config: GenerateConfig) -> AsyncIterator[dict[str, Any]]:
        yield clients

    return open_engines


async def run_interleaved(config: GenerateConfig, clients: dict[str, Any],
                          out_dir: str | Path) -> tuple[float, list[Request], dict[str, Any]]:
    """(wall seconds, requests in submission order, manifest) of one run of config.num_dialogues."""
    from interplay.generator.runtime.run import Generation

    recorded, log = recording(clients)
    generation = Generation(config, out_dir, overwrite=True)  # seeds and catalog read before the clock starts
    started = time.perf_counter()
    manifest = await generation.run(opened(recorded))
    wall = time.perf_counter() - started
    return wall, log.in_submission_order(), manifest
