"""(c) One conversation at a time, what ParlAI-style self-chat does: the same run with max_in_flight=1, so every
request goes to the engine alone. Run on a small sample (it is slow by construction)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import Request
from benchmarks.interleaved import run_interleaved
from interplay.generator.config import GenerateConfig


async def run_sequential(config: GenerateConfig, clients: dict[str, Any], out_dir: str | Path,
                         num_dialogues: int) -> tuple[float, list[Request]]:
    one_at_a_time = GenerateConfig.model_validate(
        {**config.model_dump(), "num_dialogues": num_dialogues, "max_in_flight": 1})
    wall, requests, _ = await run_interleaved(one_at_a_time, clients, out_dir)
    return wall, requests
