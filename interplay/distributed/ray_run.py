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
from interplay.errors import INPUT_ERRORS
from interplay.generator.output.layout import PARTITION_MANIFEST_RE, clear_partitions
from interplay.generator.output.storage import Storage
from interplay.logs import engine_logs_to

# A worker that dies the same way every time (out of memory at start, a broken node) is restarted this often,
# then its partition is reported as not finished; a rerun resumes it.
MAX_RESTARTS = 3
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
        self.engines = engines
        self.input_error: Exception | None = None
        try:
            self.generation = Generation(GenerateConfig.model_validate(config), out_dir, partition=partition,
                                         lease_wait_s=1.5 * LEASE_TTL_S)
        except INPUT_ERRORS as e:  # raised from run(), where the driver sees it unwrapped (and Ray retries nothing)
            self.input_error = e

    async def run(self) -> dict[str, Any]:
        if self.input_error is not None:
            raise self.input_error
        # vLLM writes to this process's fds 1 and 2 (and its engine processes inherit them): into the partition's
        # log file beside the corpus, as a single-process run does, rather than Ray's worker log.
        with engine_logs_to(self.generation.engine_log_path()):
            manifest = await self.generation.run(_load(self.engines))
        return {"status": manifest["status"], "num_dialogues": manifest["totals"]["num_dialogues"]}

    async def progress(self) -> dict[str, int]:
        if self.input_error is not None:
            return {"done": 0, "planned": 0, "output_tokens": 0}
        return {"done": self.generation.num_done, "planned": self.generation.num_planned,
                "output_tokens": self.generation.num_output_tokens}

    async def pid(self) -> int:
        return os.getpid()


def run_on_ray(config: Any, out_dir: str | Path, *, num_workers: int | None = None, address: str | None = None,
               gpus_per_worker: float | None = None, engines: str = DEFAULT_ENGINES,
               progress: TextIO | None = None, overwrite: bool = False,
               max_restarts: int = MAX_RESTARTS) -> tuple[bool, str]:
    """Generate `config` into `out_dir` with N Ray workers; returns (complete, status table). `overwrite` deletes
    every partition's shards and manifests first (refused while any partition is being written)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if gpus_per_worker is None:
        gpus_per_worker = 1 if cluster_gpus else 0
    if num_workers is None:
        # The partition count is the corpus's layout: a rerun keeps the first run's, whatever the cluster now has
        # (a lost node must not turn 8 partitions into 7, which would be refused).
        num_workers = existing_partition_count(out_dir) or (
            int(cluster_gpus // gpus_per_worker) if gpus_per_worker else 1)
    if overwrite:  # here, once, not in the workers: a restarted worker must resume, not delete again
        clear_partitions(out_dir, num_workers)
    worker_cls = ray.remote(num_gpus=gpus_per_worker, num_cpus=0 if gpus_per_worker else 1,
                            max_restarts=max_restarts, max_task_retries=max_restarts)(PartitionWorker)
    data = config.model_dump(mode="json")
    if not gpus_per_worker and num_workers > 1:
        data["cpu_threads"] = "vllm"  # CPU workers share this machine's cores: "all" would give each all of them
    workers = [worker_cls.remote(data, str(out_dir), Partition(i, num_workers), engines)
               for i in range(num_workers)]
    refs = [w.run.remote() for w in workers]
    pending = list(refs)
    bar = tqdm(unit="dlg", file=progress, disable=progress is None, dynamic_ncols=True)
    started = time.time()
    errors, input_error = [], None
    try:
        while pending:
            _, pending = ray.wait(pending, timeout=1.0)
            _show(bar, workers, started, num_active=len(pending))
        for i, ref in enumerate(refs):
            try:
                ray.get(ref)
            except Exception as e:  # a partition that could not finish: reported, the others are kept
                cause = getattr(e, "cause", None)
                if isinstance(cause, INPUT_ERRORS):  # bad input or a refused output: the same message and exit 2
                    input_error = input_error or cause
                errors.append(f"partition {i}: {type(cause or e).__name__}: {cause or e}")
    finally:
        bar.close()
        for w in workers:  # free their GPUs now, not when the driver's references are collected
            ray.kill(w, no_restart=True)
    if input_error is not None:
        raise input_error
    complete, table = report(out_dir)
    if errors:
        table += "\n" + "\n".join(errors)
    return complete, table


def existing_partition_count(out_dir: str | Path) -> int | None:
    """The partition count of the run already in `out_dir`, if it is a partitioned one."""
    for name in Storage(out_dir).names():
        if match := PARTITION_MANIFEST_RE.match(name):
            return Partition.parse(match.group(1)).count
    return None


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
