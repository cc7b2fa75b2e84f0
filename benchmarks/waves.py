"""(b) Turn-synchronous waves: what a simple script over LLM.chat does.

Every active conversation advances one turn per wave: the pending turns of all active conversations are sent
together (one batch per role: the two roles' batches go in at the same time) and the next wave starts only when
the whole wave is back, so each wave lasts as long as its longest reply. Between waves the active set is
refilled to max_in_flight, which is more than a batch-at-a-time script does: this is the favourable reading
of waves. The same prompts, parsing, grounding, rows and Parquet writing as a real run; only the timing differs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from interplay.common.roles import ROLES
from interplay.generator.config import GenerateConfig
from interplay.generator.dialogue.conversation import Conversation, Outcome, turn_seed
from interplay.generator.dialogue.parsing import ReplyParser
from interplay.generator.dialogue.rendering import PromptCache
from interplay.generator.inputs.catalog import Catalog
from interplay.generator.inputs.seeds import scan_seeds
from interplay.generator.output.records import RoleInfo, to_record
from interplay.generator.output.writer import CorpusWriter
from interplay.generator.runtime.plan import iter_plan
from interplay.generator.runtime.run import prompt_messages, resolve_seeds
from interplay.generator.runtime.scheduler import EngineDead


async def run_waves(config: GenerateConfig, clients: dict[str, Any], out_dir: str | Path) -> tuple[float, dict]:
    """Generate config.num_dialogues conversations in waves; returns (wall seconds, waves info)."""
    seeds_path, catalog_path = resolve_seeds(config)
    scan = scan_seeds(seeds_path, max_summary_chars=config.seeds.max_summary_chars)
    catalog = Catalog.load(catalog_path)
    writer = CorpusWriter(out_dir, config=config.model_dump(mode="json"), config_hash=config.hash(),
                          dialogues_per_shard=config.dialogues_per_shard, overwrite=True)
    roles = {r: RoleInfo(clients[r].model, getattr(config, r).adapter, config.sampling(r)) for r in ROLES}
    parser = ReplyParser(config.conversation.accept_marker, config.conversation.quit_marker)
    messages = prompt_messages(config, catalog)
    max_turns = config.conversation.max_turns
    run_seed = config.sampling_run_seed  # as the scheduler sends them
    plan = iter_plan(seeds_path, num_valid=scan.num_valid, num_dialogues=config.num_dialogues, done=set(),
                     max_summary_chars=config.seeds.max_summary_chars)
    active: list[Conversation] = []
    num_waves = 0
    wave_sizes: list[int] = []
    started = time.perf_counter()
    while True:
        while len(active) < config.max_in_flight and (conv := next(plan, None)) is not None:
            active.append(conv)
        if not active:
            break
        jobs = []
        for conv in active:
            role = conv.next_role
            client = clients[role]
            prompt = client.render(messages(conv, role), conv.prompt_caches.setdefault(role, PromptCache()))
            if len(prompt) + client.max_tokens > client.max_model_len:
                conv.finish(Outcome.CONTEXT_LIMIT, f"{role} prompt of {len(prompt)} tokens does not fit")
                continue
            turn = len(conv.turns)
            jobs.append((conv, client.generate(f"{conv.conversation_id}@{turn}", prompt,
                                               None if run_seed is None else
                                               turn_seed(run_seed, conv.conversation_id, turn))))
        results = await asyncio.gather(*(job for _, job in jobs), return_exceptions=True)
        num_waves += 1
        wave_sizes.append(len(jobs))
        for (conv, _), result in zip(jobs, results):
            if isinstance(result, (EngineDead, asyncio.CancelledError)):
                raise result
            if isinstance(result, BaseException):
                conv.finish(Outcome.ERROR, f"{type(result).__name__}: {result}")
            else:
                conv.add_reply(result, parser, catalog, max_turns)
        for conv in active:
            if conv.is_finished:
                writer.add(to_record(conv, roles))
        active = [c for c in active if not c.is_finished]
    writer.close(complete=True)
    wall = time.perf_counter() - started
    return wall, {"num_waves": num_waves, "mean_wave_size": round(sum(wave_sizes) / max(num_waves, 1), 1)}
