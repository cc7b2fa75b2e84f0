"""One generation run: check everything, open the output, start the engines, run the scheduler, write shards.

Every check that can fail (config, engine and sampling keys, seeds, catalog, output directory) runs before any
engine starts, so bad input costs seconds, not an engine start-up.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol, TextIO

from tqdm import tqdm

from interplay.common.partition import Partition
from interplay.common.roles import ROLES
from interplay.generator.config import ConfigError, GenerateConfig
from interplay.generator.dialogue.conversation import Conversation, Outcome
from interplay.generator.dialogue.parsing import ReplyParser
from interplay.generator.dialogue.protocol import DialogueProtocol
from interplay.generator.inputs.cards import ItemCards
from interplay.generator.inputs.catalog import Catalog
from interplay.generator.inputs.retrieval import CandidateIndex
from interplay.generator.inputs.seeds import SeedScan, scan_seeds
from interplay.generator.output.card import remove_card, write_card
from interplay.generator.output.records import RoleInfo, to_record
from interplay.generator.output.writer import CorpusWriter
from interplay.generator.runtime.identity import (
    corpus_identity,
    identity_hash,
    versions,
)
from interplay.generator.runtime.plan import count_planned, iter_plan
from interplay.generator.runtime.policy import InterplayPolicy, TurnPolicy
from interplay.generator.runtime.recent import RecentFailures
from interplay.generator.runtime.scheduler import RoleClient, Scheduler
from interplay.generator.runtime.server_checks import check_servers

OpenEngines = Callable[[GenerateConfig], AbstractAsyncContextManager[dict[str, RoleClient]]]


def resolve_seeds(config: GenerateConfig) -> tuple[Path, Path]:
    s = config.seeds
    if s.source == "file":
        return Path(s.path).expanduser(), Path(s.catalog).expanduser()
    from interplay.generator.inputs.movielens import build_movielens
    from interplay.prepare import default_movielens_dir

    return build_movielens(default_movielens_dir(), targets_per_user=s.targets_per_user,
                           min_target_rating=s.min_target_rating, seed=config.seed)


def prompt_messages(config: GenerateConfig, catalog: Catalog) -> Callable[[Conversation, str], list[dict[str, str]]]:
    """(conversation, role) -> the chat messages that role is prompted with for its next turn."""
    return DialogueProtocol(config, catalog).messages


def check_candidates(config: GenerateConfig, catalog: Catalog) -> None:
    """recommender.num_candidates against the catalog, before any engine starts."""
    k = config.num_candidates
    if k > len(catalog):
        raise ConfigError(f"recommender.num_candidates: {k} is more than the catalog's {len(catalog)} items")
    if k and config.protocol == "reference_free" and not CandidateIndex.has_attributes(catalog):
        raise ConfigError("recommender.num_candidates: the catalog has no years or attributes to match what the "
                          "user asks for; give its items attributes (genres, ...) or set num_candidates: 0")


def check_cards(config: GenerateConfig, catalog: Catalog, catalog_path: Path) -> int:
    """user.item_cards against the catalog, before any engine starts; the number of cards that will be cut."""
    if not config.user.item_cards:
        return 0
    if not ItemCards.has_attributes(catalog):
        raise ConfigError(f"user.item_cards: the catalog {catalog_path} has no attributes to show on a card; give "
                          "its items attributes (genres, ...) or set user.item_cards: false")
    return ItemCards(catalog, config.user.max_card_chars).num_cut()


class Generation:
    """Prepared run: inputs checked and the output directory opened, engines not started yet."""

    def __init__(self, config: GenerateConfig, out_dir: str | Path, *, overwrite: bool = False,
                 partition: Partition | None = None, lease_wait_s: float = 0.0):
        self.config = config
        self.partition = partition
        self.seeds_path, self.catalog_path = resolve_seeds(config)
        self.catalog = Catalog.load(self.catalog_path)
        check_candidates(config, self.catalog)
        self.num_cards_cut = check_cards(config, self.catalog, self.catalog_path)
        # topology: server: the servers are checked before the output is opened; what they serve is part of the
        # corpus identity.
        self.served = check_servers(config) if config.topology == "server" else None
        # The reference protocol tells the simulator its target: a seed without one is skipped, and counted.
        self._require_target = config.protocol == "reference"
        # The catalog's ids: a seed whose target is not among them is skipped (counted in the manifest).
        self.scan: SeedScan = scan_seeds(self.seeds_path, max_summary_chars=config.seeds.max_summary_chars,
                                         known_items=self.catalog, require_target=self._require_target)
        self._owns = partition.owns if partition else None
        self.num_planned = count_planned(self.seeds_path, num_valid=self.scan.num_valid,
                                         num_dialogues=config.num_dialogues, owns=self._owns,
                                         max_summary_chars=config.seeds.max_summary_chars, known_items=self.catalog,
                                         require_target=self._require_target)
        # Fingerprinted before the output is opened: what decides the dialogues must match to resume, and it is
        # on record before the first shard.
        self.identity = self.corpus_identity()
        self.writer = CorpusWriter(out_dir, config=config.model_dump(mode="json"), config_hash=self.corpus_hash(),
                                   dialogues_per_shard=config.dialogues_per_shard, overwrite=overwrite,
                                   partition_tag=partition.tag if partition else None, identity=self.identity,
                                   extra=self._manifest_extra(), lease_wait_s=lease_wait_s,
                                   max_attempts=config.max_attempts)
        self.writer.run_info = {"runtime": config.runtime_settings(), "versions": versions()}
        if overwrite:  # the corpus its card described is gone
            remove_card(self.writer.storage)
        self.num_already_done = self.num_done
        self.scheduler: Scheduler | None = None
        self.recent = RecentFailures()
        self.stopped_early: str | None = None  # why most recent conversations failed, when that stopped the run

    def corpus_identity(self) -> dict[str, Any]:
        """What decides the dialogues (identity.py); the single-LLM baseline adds its mode and prompt."""
        return corpus_identity(self.config, self.seeds_path, self.catalog_path, served=self.served)

    def corpus_hash(self) -> str:
        """The hash every run in one output directory must share."""
        return identity_hash(self.identity)

    @property
    def num_done(self) -> int:
        """This run's (or partition's) requested conversations that are finished."""
        return self.writer.done.count_below(self.config.num_dialogues)

    @property
    def num_pending_retry(self) -> int:
        """Conversations that failed and are not done: a rerun generates them again (up to max_attempts)."""
        return len(self.writer.failures.attempts)

    @property
    def num_remaining(self) -> int:
        return self.num_planned - self.num_already_done

    @property
    def num_output_tokens(self) -> int:
        return self.scheduler.stats.num_output_tokens if self.scheduler else 0

    def _manifest_extra(self) -> dict[str, Any]:
        return {"num_dialogues": self.config.num_dialogues, "num_planned": self.num_planned, "versions": versions(),
                "seeds": {"path": str(self.seeds_path), "sha256": self.identity["seeds"],
                          "num_rows": self.scan.num_rows,
                          "num_valid": self.scan.num_valid, "skipped": self.scan.skipped},
                "catalog": {"path": str(self.catalog_path), "sha256": self.identity["catalog"],
                            "num_items": len(self.catalog),
                            "skipped": self.catalog.num_skipped,
                            "duplicate_titles": self.catalog.num_duplicate_titles,
                            "cards_cut": self.num_cards_cut}}

    # What a kind of run decides; the single-LLM baseline (baseline.py) overrides these and nothing of run().

    def engine_config(self) -> GenerateConfig:
        """The config the engines are opened with."""
        return self.config

    def policy(self) -> TurnPolicy:
        """What the scheduler sends for each conversation, and how the answers make its turns."""
        cfg = self.config
        return InterplayPolicy(prompt_messages(cfg, self.catalog), catalog=self.catalog,
                               parser=ReplyParser(cfg.conversation.accept_marker, cfg.conversation.quit_marker),
                               max_turns=cfg.conversation.max_turns, reference=cfg.protocol == "reference")

    def role_infos(self, clients: dict[str, RoleClient]) -> dict[str, RoleInfo]:
        """Each role's model, adapter and sampling, as the records show them."""
        return {r: RoleInfo(clients[r].model, getattr(self.config, r).adapter, self.config.sampling(r))
                for r in ROLES}

    def record_protocol(self) -> str:
        """The records' `protocol` column."""
        return self.config.protocol

    def engine_log_path(self) -> Path:
        """Where vLLM's own output goes. Logs stay on this machine: beside the corpus when it is local, else under
        the cache directory, named by the output (~/.cache/interplay/logs/s3-bucket-corpus-1a2b3c4d/); one file
        per partition."""
        from interplay.prepare import cache_dir

        storage = self.writer.storage
        name = f"engine-{self.partition.tag}.log" if self.partition else "engine.log"
        local_out = storage.local_path()
        return (local_out / "logs" if local_out else cache_dir() / "logs" / storage.slug) / name

    def progress_bar(self, progress: TextIO | None) -> tqdm:
        """Dialogues done of those planned, on the terminal stream `progress` (no bar if None)."""
        return tqdm(total=self.num_planned, initial=self.num_already_done, unit="dlg", file=progress,
                    disable=progress is None, dynamic_ncols=True, smoothing=0.1)

    async def run(self, open_engines: OpenEngines, *, progress: TextIO | None = None) -> dict[str, Any]:
        """Generate the remaining conversations; returns the manifest. Interrupted runs write what is done."""
        if self.num_remaining == 0:
            return self._with_card(self.writer.close(complete=True, extra=self._manifest_extra()), progress)
        cfg = self.config
        bar = self.progress_bar(progress)
        started = time.time()
        try:
            async with open_engines(self.engine_config()) as clients:
                roles = self.role_infos(clients)
                started = time.time()
                self.writer.start_clock()  # throughput counts generation, not engine start-up
                # Everything built so far (catalog, tokenizer, engine) lives as long as the run. A full collection
                # walks all of it and holds the GIL, the event loop's thread included, for 0.3 s or more on a
                # 2-core CPU: frozen, it walks only what the run itself allocates (benchmarks/scale.py measures the
                # loop's stalls).
                gc.freeze()

                async def on_finished(conv: Conversation) -> None:
                    self._watch_failures(conv, scheduler)
                    await self.writer.put(to_record(conv, roles, protocol=self.record_protocol()))
                    elapsed = max(time.time() - started, 1e-9)
                    bar.update(1)
                    bar.set_postfix(tok_s=f"{self.num_output_tokens / elapsed:.0f}",
                                    in_flight=scheduler.stats.num_in_flight, refresh=False)

                self.scheduler = scheduler = Scheduler(clients, self.policy(), max_in_flight=cfg.max_in_flight,
                                                       run_seed=cfg.sampling_run_seed, on_finished=on_finished)
                plan = iter_plan(self.seeds_path, num_valid=self.scan.num_valid, num_dialogues=cfg.num_dialogues,
                                 done=self.writer.done, max_summary_chars=cfg.seeds.max_summary_chars,
                                 owns=self._owns, known_items=self.catalog, require_target=self._require_target,
                                 duplicate_rows=self.scan.duplicate_rows)
                with stop_on_sigint(scheduler):
                    await scheduler.run(plan)
        finally:
            gc.unfreeze()  # a later run in this process starts from a clean slate
            bar.close()
            # Whatever happened, finished conversations are written; the corpus is complete only if every
            # requested conversation is in a shard.
            manifest = self.writer.close(complete=self.num_done == self.num_planned, extra=self._manifest_extra())
        return self._with_card(manifest, progress)

    def _with_card(self, manifest: dict[str, Any], progress: TextIO | None) -> dict[str, Any]:
        """A complete single run gets its dataset card, written after the writer closed (output/card.py); a
        partitioned corpus gets one from `interplay status` once every partition is complete."""
        if manifest["status"] == "complete" and self.partition is None:
            write_card(self.writer.storage, manifest, warn=lambda line: print(f"interplay: {line}",
                                                                              file=progress or sys.stderr))
        return manifest

    def _watch_failures(self, conv: Conversation, scheduler: Scheduler) -> None:
        """Most recent conversations failing: start no new ones (the active ones finish and are written)."""
        self.recent.add(conv.error if conv.outcome == Outcome.ERROR else None)
        if self.stopped_early is None and self.recent.is_failing:
            self.stopped_early = self.recent.describe()
            self.writer.run_info["stopped_early"] = self.stopped_early
            scheduler.stop()


class Stoppable(Protocol):
    is_stopping: bool

    def stop(self) -> None: ...


class stop_on_sigint:
    """First Ctrl-C: start no new conversations and let active ones finish. Second Ctrl-C: stop at once."""

    def __init__(self, target: Stoppable):
        self.target = target

    def __enter__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        try:
            self.loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (a Ray actor): no handler
            self.loop = None

    def _on_sigint(self) -> None:
        if self.target.is_stopping:
            self.task.cancel()
        else:
            self.target.stop()

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None:
            self.loop.remove_signal_handler(signal.SIGINT)
