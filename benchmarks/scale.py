"""A million dialogues through the real run path (plan, scheduler, rendering with SmolLM2's tokenizer, parsing,
grounding, writer thread, shard log, manifest) on the zero-latency engine, so what is measured is interplay's
own work at corpus scale, not a model.

    python -m benchmarks.scale                         # 1,000,000 dialogues at 1000-row and at 50-row shards
    python -m benchmarks.scale --dialogues 20000       # a smaller proof of the same figures

Two runs, each in processes of its own so each peak RSS is its own:
- 1000-row shards, 0 to N in one process: peak RSS when 10k, 100k and N dialogues are done; the longest
  event-loop stall (a heartbeat task that sleeps 10 ms and measures how late it wakes, while conversations are
  in flight).
- 50-row shards (N/50 shards: the hard case for the shard log and the manifest): killed with SIGKILL at 90%,
  rerun; the rerun's time from its start to its first new turn; then `interplay status` on the output, and the
  manifest's size. Its stall and RSS figures are measured the same way.
With --parallel the two runs go side by side (one core each; each run is one thread plus the writer thread).

Then the simulated GPU's table (benchmarks/gpu_sim.py: 64 to 4096 in flight, three reply-length spreads), unless
--skip-gpu-sim.
The last stdout line is one JSON object (see README: "A million dialogues"); results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT, log, machine

MARKS = (10_000, 100_000)
MAX_IN_FLIGHT = 128  # as many as the GPU configs' order of magnitude; the loop's lateness grows with it
HEARTBEAT_S = 0.01


def _vm_hwm_mb() -> float:
    """Peak resident set of this process so far (VmHWM), in MB (2^20 bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def child(out: str, figures_path: str, num_dialogues: int, shard_rows: int, kill_at: int | None,
          tokenizer: str, config_path: str, real_engine: bool = False, max_in_flight: int = MAX_IN_FLIGHT) -> None:
    """One run in this process; figures go to `figures_path` as they come (a killed run leaves them too).
    `real_engine`: vLLM as configured instead of the zero-latency engine (for the stall figure only)."""
    import asyncio
    import threading

    from benchmarks.orchestration import _config
    from benchmarks.zero_latency import make_tokenizer, zero_latency_open_engines
    from interplay.generator.runtime.run import Generation

    started = time.perf_counter()
    settings = [f"dialogues_per_shard={shard_rows}"] + ([] if real_engine else [f"max_in_flight={max_in_flight}"])
    config = _config(config_path, num_dialogues, settings)
    figures: dict[str, Any] = {"num_dialogues": num_dialogues, "dialogues_per_shard": shard_rows,
                               "peak_rss_mb": {}, "max_loop_stall_ms": 0.0}

    def save() -> None:
        tmp = figures_path + ".tmp"
        Path(tmp).write_text(json.dumps(figures))
        os.replace(tmp, figures_path)

    generation = Generation(config, out)
    figures["already_done"] = generation.num_already_done
    if real_engine:
        from interplay.generator.runtime.engine import check_config, open_engines

        check_config(config)
        engines, figures["engine"] = open_engines, "vllm"
    else:
        titles = [item.display for item, _ in zip(generation.catalog, range(500))]
        engines = zero_latency_open_engines(make_tokenizer(tokenizer), titles)
    marks = sorted({m for m in (*MARKS, num_dialogues) if generation.num_already_done < m <= num_dialogues})
    stop = threading.Event()

    def monitor() -> None:
        """Peak RSS as each mark is passed; the time of the first new turn."""
        while not stop.wait(0.05):
            done = generation.num_done
            scheduler = generation.scheduler
            if "first_turn_s" not in figures and scheduler is not None and scheduler.stats.num_turns:
                figures["first_turn_s"] = round(time.perf_counter() - started, 3)
                save()
            while marks and done >= marks[0]:
                figures["peak_rss_mb"][str(marks.pop(0))] = _vm_hwm_mb()
                save()

    late_ms = [0] * 1001  # a histogram by whole ms (the last bucket: 1 s or more): constant memory at any length

    async def heartbeat() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(HEARTBEAT_S)
            late = time.perf_counter() - before - HEARTBEAT_S
            scheduler = generation.scheduler
            if scheduler is not None and scheduler.stats.num_in_flight > 0:  # generating, not starting up
                figures["max_loop_stall_ms"] = max(figures["max_loop_stall_ms"], round(late * 1000, 1))
                late_ms[min(int(late * 1000), 1000)] += 1

    async def main() -> dict[str, Any]:
        beat = asyncio.create_task(heartbeat())
        try:
            return await generation.run(engines)
        finally:
            beat.cancel()

    if kill_at is not None:  # SIGKILL when the kill_at-th conversation finishes, buffered ones included
        put = generation.writer.put

        async def put_or_die(record: dict[str, Any]) -> None:
            await put(record)
            if generation.num_done >= kill_at:
                save()
                os.kill(os.getpid(), signal.SIGKILL)
        generation.writer.put = put_or_die  # type: ignore[method-assign]

    thread = threading.Thread(target=monitor, daemon=True)
    thread.start()
    gen_started, cpu_started = time.perf_counter(), time.process_time()
    manifest = asyncio.run(main())
    wall = time.perf_counter() - gen_started
    stop.set()
    thread.join()
    turns = generation.scheduler.stats.num_turns if generation.scheduler else 0
    figures.update({
        "status": manifest["status"], "num_turns": turns, "wall_s": round(wall, 1),
        "turns_per_s": round(turns / wall, 1), "cpu_s": round(time.process_time() - cpu_started, 1),
        "num_shards": manifest["num_shards"], "corpus_dialogues": manifest["totals"]["num_dialogues"],
    })
    figures["peak_rss_mb"].update({str(m): _vm_hwm_mb() for m in marks})  # reached at the very end
    figures["loop_lateness_ms"] = _percentiles(late_ms)
    figures["load_average_after"] = round(os.getloadavg()[0], 2)
    save()


def _percentiles(histogram: list[int]) -> dict[str, int]:
    """p50, p99 and the count over 50 ms of the heartbeat's lateness, from its whole-ms histogram."""
    total, seen, out = sum(histogram), 0, {}
    for ms, count in enumerate(histogram):
        seen += count
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            if name not in out and total and seen >= q * total:
                out[name] = ms
    return {**out, "beats": total, "over_50ms": sum(histogram[51:])}


def _spawn(out: Path, figures: Path, n: int, shard_rows: int, tokenizer: str, config: str,
           kill_at: int | None = None, real_engine: bool = False,
           max_in_flight: int = MAX_IN_FLIGHT) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "benchmarks.scale", "--child", str(out), "--figures", str(figures),
           "--dialogues", str(n), "--shard-rows", str(shard_rows), "--tokenizer", tokenizer, "--config", config,
           "--max-in-flight", str(max_in_flight)]
    if kill_at is not None:
        cmd += ["--kill-at", str(kill_at)]
    if real_engine:
        cmd += ["--real-engine", str(n)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen, figures: Path, what: str, *, killed: bool = False) -> dict[str, Any]:
    _, err = proc.communicate()
    expected = -signal.SIGKILL if killed else 0
    if proc.returncode != expected:
        raise RuntimeError(f"{what}: exit {proc.returncode}, expected {expected}:\n{err[-3000:]}")
    return json.loads(figures.read_text())


def _status_s(out: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "interplay", "status", str(out)], cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"interplay status {out}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return round(time.perf_counter() - started, 2)


def measure(n: int, *, tokenizer: str, config: str, parallel: bool, work: Path,
            max_in_flight: int = MAX_IN_FLIGHT) -> dict[str, Any]:
    whole_out, kill_out = work / "shards-1000", work / "shards-50"
    kill_at = int(n * 0.9)
    log(f"scale: {n:,} dialogues at 1000-row shards; {n:,} at 50-row shards, killed at {kill_at:,} and rerun"
        + (" (side by side)" if parallel else ""))
    whole = _spawn(whole_out, work / "whole.json", n, 1000, tokenizer, config, max_in_flight=max_in_flight)
    if not parallel:
        runs = {"1000": _wait(whole, work / "whole.json", "the 1000-row run")}
        log(f"  1000-row shards: {runs['1000']['turns_per_s']:.0f} turns/s, {runs['1000']['wall_s']:.0f} s")
    killed = _spawn(kill_out, work / "killed.json", n, 50, tokenizer, config, kill_at=kill_at,
                    max_in_flight=max_in_flight)
    first = _wait(killed, work / "killed.json", "the 50-row run", killed=True)
    log(f"  50-row shards: killed at {kill_at:,}; rerunning")
    rerun_started = time.perf_counter()
    resumed = _wait(_spawn(kill_out, work / "resumed.json", n, 50, tokenizer, config, max_in_flight=max_in_flight),
                    work / "resumed.json", "the rerun")
    resumed["wall_with_startup_s"] = round(time.perf_counter() - rerun_started, 1)
    if parallel:
        runs = {"1000": _wait(whole, work / "whole.json", "the 1000-row run")}
    runs["50"] = {"killed_run": first, "rerun": resumed}
    status_s = _status_s(kill_out)
    manifest_bytes = (kill_out / "manifest.json").stat().st_size
    log_bytes = (kill_out / "shards.jsonl").stat().st_size
    return {"runs": runs, "status_s": status_s, "manifest_bytes": manifest_bytes, "shard_log_bytes": log_bytes,
            "resume_first_turn_s": resumed.get("first_turn_s")}


def summary(n: int, scale: dict[str, Any], gpu: dict[str, Any] | None) -> dict[str, Any]:
    whole, killed = scale["runs"]["1000"], scale["runs"]["50"]
    stalls = [whole["max_loop_stall_ms"], killed["killed_run"]["max_loop_stall_ms"],
              killed["rerun"]["max_loop_stall_ms"]]
    return {
        "dialogues": n, "turns_per_s": whole["turns_per_s"],
        "peak_rss_mb": whole["peak_rss_mb"], "max_loop_stall_ms": max(stalls),
        "max_loop_stall_ms_by_shard_rows": {"1000": whole["max_loop_stall_ms"], "50": max(stalls[1:])},
        "loop_lateness_ms": {"1000": whole.get("loop_lateness_ms"), "50": killed["rerun"].get("loop_lateness_ms")},
        "wall_s": whole["wall_s"],
        "resume_first_turn_s": scale["resume_first_turn_s"], "status_s": scale["status_s"],
        "manifest_bytes": scale["manifest_bytes"], "shard_log_bytes": scale["shard_log_bytes"],
        "simulated_gpu": None if gpu is None else {
            "simulation": gpu["simulation"], "by_max_in_flight": gpu["by_max_in_flight"],
            "targets_met": {name: t["met"] for name, t in gpu["targets"].items()}},
    }


def targets(result: dict[str, Any], whole_wall_s: float) -> dict[str, bool | None]:
    rss = result["peak_rss_mb"]
    marks = sorted(rss, key=int)
    return {
        "1M dialogues in <= 40 min": result["dialogues"] >= 1_000_000 and whole_wall_s <= 40 * 60,
        "peak RSS at the end within 10% of 100k": (rss[marks[-1]] <= 1.1 * rss["100000"]) if "100000" in rss else None,
        "loop stall <= 50 ms": result["max_loop_stall_ms"] <= 50,
        "rerun's first turn <= 30 s": (result["resume_first_turn_s"] or 1e9) <= 30,
        "status <= 10 s": result["status_s"] <= 10,
        "manifest <= 5 MB": result["manifest_bytes"] <= 5 * 2**20,
    }


def real_engine_stall(args: argparse.Namespace) -> int:
    """The loop stall of a real-engine run (vLLM as --config says, 50-row shards)."""
    work = Path(args.work or tempfile.mkdtemp(prefix="interplay-scale-"))
    n = args.real_engine
    log(f"loop stall on the real engine: {n} dialogues, 50-row shards, {args.config}")
    try:
        figures = _wait(_spawn(work / "real", work / "real.json", n, 50, args.tokenizer, args.config, real_engine=True),
                        work / "real.json", "the real-engine run")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    result = {"engine": "vllm", "config": args.config, "dialogues": n, "dialogues_per_shard": 50,
              "max_loop_stall_ms": figures["max_loop_stall_ms"], "turns_per_s": figures["turns_per_s"],
              "num_shards": figures["num_shards"]}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    Path(args.results).mkdir(parents=True, exist_ok=True)
    (Path(args.results) / f"scale-real-engine-{stamp}.json").write_text(
        json.dumps({"result": result, "machine": machine(), "command": "python -m benchmarks.scale "
                    + " ".join(sys.argv[1:])}, indent=1))
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialogues", type=int, default=int(os.environ.get("SCALE_DIALOGUES", 1_000_000)))
    parser.add_argument("--tokenizer", default="smollm2", choices=["smollm2", "simple"],
                        help="simple: a word-hash stand-in, for tests only")
    parser.add_argument("--config", default=str(ROOT / "configs" / "embedded.yaml"),
                        help="the run's config (its seeds and catalog); the engine is always the zero-latency one")
    parser.add_argument("--max-in-flight", type=int, default=MAX_IN_FLIGHT,
                        help="conversations in flight on the zero-latency engine")
    parser.add_argument("--parallel", action="store_true", help="the two runs side by side, one core each")
    parser.add_argument("--skip-gpu-sim", action="store_true", help="leave out the simulated GPU shape")
    parser.add_argument("--real-engine", type=int, metavar="N",
                        help="instead: N dialogues on the real engine of --config at 50-row shards, for the loop "
                             "stall figure")
    parser.add_argument("--work", help="where the corpora go (default: a temporary folder, deleted after)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one run in this process
    parser.add_argument("--figures", help=argparse.SUPPRESS)
    parser.add_argument("--shard-rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kill-at", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.figures, args.dialogues, args.shard_rows, args.kill_at, args.tokenizer, args.config,
              real_engine=args.real_engine is not None, max_in_flight=args.max_in_flight)
        return 0
    if args.real_engine:
        return real_engine_stall(args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="interplay-scale-"))
    host = machine()
    try:
        scale = measure(args.dialogues, tokenizer=args.tokenizer, config=args.config, parallel=args.parallel,
                        work=work, max_in_flight=args.max_in_flight)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    gpu = None
    if not args.skip_gpu_sim:
        from benchmarks.gpu_sim import simulated_gpu

        log("simulated GPU (benchmarks/gpu_sim.py): 64 to 4096 in flight, three reply-length spreads")
        gpu = simulated_gpu(tokenizer=args.tokenizer)
    result = {**summary(args.dialogues, scale, gpu), "max_in_flight": args.max_in_flight}
    result["targets"] = targets(result, scale["runs"]["1000"]["wall_s"])
    out = {"scale": scale, "machine": host, "command": "python -m benchmarks.scale " + " ".join(argv or sys.argv[1:])}
    Path(args.results).mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (Path(args.results) / f"scale-{stamp}.json").write_text(json.dumps({**out, "simulated_gpu": gpu, "result": result},
                                                                      indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
