"""Scale out on Ray: one actor per engine group, each running the ordinary scheduler on its own partition.

    interplay generate --config configs/gpu-lora.yaml --output /data/crs --ray [--address auto] [--num-workers 8]

Each worker is an async Ray actor holding its own engines (one GPU by default; Ray places it) and runs
`Generation` for partition i of N into the shared output directory. Ray restarts a worker that dies and retries
its run, which resumes from the partition's finished shards, so the corpus stays exactly once. The driver shows
one progress bar for all workers, writes the combined manifest at the end, and exits non-zero if a partition did
not finish. Rerunning the same command after the driver itself died resumes every partition.
"""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from interplay.common.partition import Partition
from interplay.distributed.status import report
from interplay.generator.output.layout import clear_partitions
from interplay.logs import engine_logs_to

# Engines are built from a "module:function" path, so that a worker process imports them itself.
DEFAULT_ENGINES = "interplay.generator.runtime.engine:open_engines"


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class PartitionWorker:
    """Runs one partition. Async, so `progress` answers while `run` is generating."""

    def __init__(self, config: dict[str, Any], out_dir: str, partition: Partition, engines: str):
        from interplay.generator.config import GenerateConfig
        from interplay.generator.output.lease import LEASE_TTL_S
        from interplay.generator.runtime.run import Generation

        # A restarted worker whose old self died on a lost node waits for that lease to lapse; one whose old self
        # still runs is refused (and fences it: see lease.py).
        self.generation = Generation(GenerateConfig.model_validate(config), out_dir, partition=partition,
                                     lease_wait_s=1.5 * LEASE_TTL_S)
        self.engines = engines

    async def run(self) -> dict[str, Any]:
        # vLLM writes to this process's fds 1 and 2 (and its engine processes inherit them): into the partition's
        # log file beside the corpus, as a single-process run does, rather than Ray's worker log.
        with engine_logs_to(self.generation.engine_log_path()):
            manifest = await self.generation.run(_load(self.engines))
        return {"status": manifest["status"], "num_dialogues": manifest["totals"]["num_dialogues"]}

    async def progress(self) -> dict[str, int]:
        return {"done": self.generation.num_done, "planned": self.generation.num_planned,
                "output_tokens": self.generation.num_output_tokens}

    async def pid(self) -> int:
        return os.getpid()


def run_on_ray(config: Any, out_dir: str | Path, *, num_workers: int | None = None, address: str | None = None,
               gpus_per_worker: float | None = None, engines: str = DEFAULT_ENGINES,
               progress: TextIO | None = None, overwrite: bool = False) -> tuple[bool, str]:
    """Generate `config` into `out_dir` with N Ray workers; returns (complete, status table). `overwrite` deletes
    every partition's shards and manifests first (refused while any partition is being written)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if gpus_per_worker is None:
        gpus_per_worker = 1 if cluster_gpus else 0
    if num_workers is None:
        num_workers = int(cluster_gpus // gpus_per_worker) if gpus_per_worker else 1
    if overwrite:  # here, once, not in the workers: a restarted worker must resume, not delete again
        clear_partitions(out_dir, num_workers)
    worker_cls = ray.remote(num_gpus=gpus_per_worker, num_cpus=0 if gpus_per_worker else 1,
                            max_restarts=-1, max_task_retries=-1)(PartitionWorker)
    data = config.model_dump(mode="json")
    if not gpus_per_worker and num_workers > 1:
        data["cpu_threads"] = "vllm"  # CPU workers share this machine's cores: "all" would give each all of them
    workers = [worker_cls.remote(data, str(out_dir), Partition(i, num_workers), engines)
               for i in range(num_workers)]
    refs = [w.run.remote() for w in workers]
    pending = list(refs)
    bar = tqdm(unit="dlg", file=progress, disable=progress is None, dynamic_ncols=True)
    started = time.time()
    errors = []
    try:
        while pending:
            _, pending = ray.wait(pending, timeout=1.0)
            _show(bar, workers, started, num_active=len(pending))
        for i, ref in enumerate(refs):
            try:
                ray.get(ref)
            except Exception as e:  # a partition that could not finish: reported, the others are kept
                errors.append(f"partition {i}: {type(e).__name__}: {e}")
    finally:
        bar.close()
        for w in workers:  # free their GPUs now, not when the driver's references are collected
            ray.kill(w, no_restart=True)
    complete, table = report(out_dir)
    if errors:
        table += "\n" + "\n".join(errors)
    return complete, table


def _show(bar: tqdm, workers: list[Any], started: float, num_active: int) -> None:
    import ray

    done = planned = tokens = 0
    for ref in [w.progress.remote() for w in workers]:
        try:
            p = ray.get(ref, timeout=5)
        except Exception:  # a worker being restarted answers later
            continue
        done, planned, tokens = done + p["done"], planned + p["planned"], tokens + p["output_tokens"]
    elapsed = max(time.time() - started, 1e-9)
    bar.total = planned or None
    bar.n = done
    bar.set_postfix(tok_s=f"{tokens / elapsed:.0f}", workers=num_active, refresh=False)
    bar.refresh()
