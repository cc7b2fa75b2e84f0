"""The server row of `make bench`: the in-process engine against the same model behind `vllm serve` (topology:
server, generator/runtime/server.py), same config, sizes and conversations, one after the other in one run.

    python -m benchmarks.server          # this row alone; BENCH_QUICK=1 for small sizes; last stdout line: JSON

Each side starts its engine (the server as `make serve` starts it: generator/runtime/serve.py, with the config's
KV cache size), warms up, starts from a cold prefix cache, and runs the interleaved scheduler (a) on the same
seeds. Figures: output tok/s, cached-prompt share, and where the CPU time goes (this process: the scheduler and,
in-process, detokenising; the API server process: HTTP, JSON, tokenizer work; the engine processes: the model).
The figure that matters: the server's output tok/s as a share of the in-process run's (target >= 0.9), and the
cached-prompt shares within 5 points of each other. Only for the embedded model, whose flags serve.py knows.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.common import MemorySampler, figures, log, machine, ratio, recording
from benchmarks.interleaved import opened, run_interleaved
from benchmarks.replay import reset_prefix_caches
from interplay.generator.config import GenerateConfig
from interplay.prepare import default_model_dir

TARGETS = {"server_over_in_process_min": 0.9, "cached_share_points_max": 5.0}
START_TIMEOUT_S = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_run(config: GenerateConfig, **values: Any) -> GenerateConfig:
    return GenerateConfig.model_validate({**config.model_dump(), **values})


def served_config(config: GenerateConfig, url: str) -> GenerateConfig:
    """`config` with both roles on the server at `url`: the same sampling, protocol and sizes."""
    from interplay.generator.runtime.serve import SERVED_NAME

    data = config.model_dump(exclude_none=True)
    data.update(topology="server", engine={},
                server={"base_url": url, "model": SERVED_NAME, "tokenizer": str(default_model_dir())})
    for role in ("user", "recommender"):
        data[role]["engine"] = {}
    return GenerateConfig.model_validate(data)


@contextlib.contextmanager
def cpu_split(server: subprocess.Popen | None = None) -> Iterator[dict[str, float]]:
    """CPU seconds in the block: this process, the API server process (if any), the engine processes."""
    def snapshot() -> dict[int, float]:
        procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
        out = {}
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
        return out

    split: dict[str, float] = {}
    before = snapshot()
    yield split
    after = snapshot()
    used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    me, api = psutil.Process().pid, server.pid if server is not None else None
    split["client_process_cpu_s"] = round(used.pop(me, 0.0), 1)
    if api is not None:
        split["api_server_process_cpu_s"] = round(used.pop(api, 0.0), 1)
    split["engine_processes_cpu_s"] = round(sum(used.values()), 1)


async def timed(config: GenerateConfig, clients: dict[str, Any], work: Path, name: str,
                server: subprocess.Popen | None = None) -> dict[str, Any]:
    from interplay.generator.runtime.run import Generation

    out = work / "corpora" / name
    shutil.rmtree(out, ignore_errors=True)
    recorded, requests = recording(clients)
    # Prepared outside the clock and the CPU count: the server's checks load a tokenizer and send probes.
    generation = Generation(config, out, overwrite=True)
    with MemorySampler() as memory, cpu_split(server) as cpu:
        started = time.perf_counter()
        await generation.run(opened(recorded))
        wall = time.perf_counter() - started
    requests = requests.in_submission_order()
    return {**figures(requests, wall, config.num_dialogues), **cpu, "peak_pss_mib": memory.figures()["peak_pss_mib"]}


async def warmup(config: GenerateConfig, clients: dict[str, Any], work: Path, n: int) -> None:
    if n > 0:
        out = work / "corpora" / "warmup"
        shutil.rmtree(out, ignore_errors=True)
        await run_interleaved(with_run(config, num_dialogues=n, max_in_flight=n), clients, out)


async def in_process(config: GenerateConfig, work: Path, num_warmup: int) -> dict[str, Any]:
    from interplay.generator.runtime.engine import open_engines

    log(f"server row: in-process engine, {config.num_dialogues} dialogues, max_in_flight={config.max_in_flight}")
    async with open_engines(config) as clients:
        await warmup(config, clients, work, num_warmup)
        await reset_prefix_caches(clients)
        result = await timed(config, clients, work, "in-process")
    log(f"  {result['output_tok_per_s']:.0f} output tok/s")
    return result


def start_server(port: int, kv_cache_memory_bytes: int, log_path: Path, *, all_cores: bool) -> subprocess.Popen:
    """The server as `make serve` starts it; dev mode for /reset_prefix_cache (a cold cache, as in-process)."""
    from interplay.generator.runtime.serve import serve_command, serve_env

    command = serve_command(port=port, kv_cache_memory_bytes=kv_cache_memory_bytes,
                            extra=["--uvicorn-log-level", "warning"])
    with open(log_path, "a") as f:
        proc = subprocess.Popen(command, env={**serve_env(all_cores=all_cores), "VLLM_SERVER_DEV_MODE": "1"}, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 200:
                return proc
        time.sleep(1)
    stop_server(proc)
    raise RuntimeError(f"vllm serve did not start (see {log_path})")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGKILL to the server's whole process group: killing the API server alone left its engine core and worker
    running, orphaned, each holding the KV cache (5.7 GB RSS apiece on the embedded model)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


async def on_server(config: GenerateConfig, work: Path, num_warmup: int) -> dict[str, Any]:
    from interplay.generator.runtime.server import open_servers

    port = free_port()
    kv = int(config.engine.get("kv_cache_memory_bytes") or 4 << 30)
    log(f"server row: vllm serve on port {port}, {config.num_dialogues} dialogues, max_in_flight="
        f"{config.max_in_flight}")
    # The same thread binding as the in-process engine's (cpu_threads)
    proc = start_server(port, kv, work / "server.log", all_cores=config.cpu_threads == "all")
    try:
        cfg = served_config(config, f"http://127.0.0.1:{port}")
        async with open_servers(cfg) as clients:
            await warmup(cfg, clients, work, num_warmup)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                (await http.post("/reset_prefix_cache")).raise_for_status()
            result = await timed(cfg, clients, work, "server", proc)
    finally:
        stop_server(proc)
    log(f"  {result['output_tok_per_s']:.0f} output tok/s")
    return result


async def measure(config: GenerateConfig, work: Path, *, num_dialogues: int, max_in_flight: int,
                  num_warmup: int) -> dict[str, Any]:
    """Both sides and their ratios; in-process first (its engine is shut down before the server starts)."""
    if Path(config.engine_args("user").get("model", "")).expanduser() != default_model_dir():
        raise ValueError("the server row serves the embedded model only (serve.py's flags)")
    work.mkdir(parents=True, exist_ok=True)
    cfg = with_run(config, num_dialogues=num_dialogues, max_in_flight=max_in_flight)
    local = await in_process(cfg, work, num_warmup)
    served = await on_server(cfg, work, num_warmup)
    points = round(100 * (served["cached_prompt_share"] - local["cached_prompt_share"]), 1)
    share = ratio(served["output_tok_per_s"], local["output_tok_per_s"])
    return {"in_process": local, "server": served, "server_over_in_process": share,
            "cached_share_points": points,
            "targets": {"server_over_in_process >= 0.9": share is not None
                        and share >= TARGETS["server_over_in_process_min"],
                        "cached share within 5 points": abs(points) <= TARGETS["cached_share_points_max"]}}


def main(argv: list[str] | None = None) -> int:
    import asyncio

    from benchmarks import throughput_args
    from benchmarks.common import fds_to
    from interplay.generator.config import load_config, parse_override

    args = throughput_args.parse_args(argv, description=__doc__.split("\n\n")[0])
    config = load_config(args.config, dict(parse_override(s) for s in args.set))
    work = Path(args.work) / "server-row"
    work.mkdir(parents=True, exist_ok=True)
    with fds_to(work / "engine.log"):
        out = asyncio.run(measure(config, work, num_dialogues=args.server_dialogues,
                                  max_in_flight=args.server_max_in_flight, num_warmup=args.warmup))
    out["machine"] = machine()
    out["settings"] = {"config": args.config, "set": args.set, "quick": args.quick}
    log(f"server/in-process output tok/s: {out['server_over_in_process']}; cached share: server "
        f"{out['server']['cached_prompt_share']:.3f}, in-process {out['in_process']['cached_prompt_share']:.3f}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
