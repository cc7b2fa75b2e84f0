"""The scheduler comparison on a SIMULATED GPU: (a) interleaved, (b) waves and (d) the replay bound, each on a
fresh simulated engine (gpu_model.py: Llama-3.1-8B on one H100, vLLM-style continuous batching, virtual clock).

    python -m benchmarks.gpu_sim                                        # 64 to 4096 in flight x three spreads
    python -m benchmarks.gpu_sim --max-in-flight 1024 --spreads 0.35    # one point
    python -m benchmarks.gpu_sim --gpu kv_cache_tokens=4000000          # another GPU: any GpuModel parameter

The last stdout line is one JSON object: the table of a/b, a/d, d/b by max_in_flight and spread, the targets over
it, every run's figures (per variant: time by term of the step cost, prompt tokens computed and cached, KV
cache occupancy and evictions, the interleaved scheduler's admission cap). (d) replays (a)'s requests without
turn dependencies, at most max_in_flight out at once (as many as max_in_flight conversations ever have), on an
engine whose KV cache never fills: every prefix computed once stays cached. That is more than any scheduler gets
out of the real cache, a bound that every run checks against (b) and (a). A replay on the real cache is no
bound: what it finds cached depends on the order the requests come in.

Every figure is simulated: tokens per *virtual* second of the step-time model, not a measurement on a GPU. What
is real is interplay's own work per turn (the same Generation, prompt rendering with the SmolLM2 tokenizer,
parsing, grounding, rows and Parquet as a real run) and the waves script; its real CPU time is reported beside
the simulated time. Replies are zero_latency.py's canned replies, each conversation's opening numbered so that
no two conversations share a turn; their output token counts are rescaled to the embedded corpora's mean per
role, with a spread (coefficient of variation) that is a knob.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    Request,
    log,
    machine,
    ratio,
    recording,
    write_results,
)
from benchmarks.gpu_model import GpuModel, SimEngine
from benchmarks.zero_latency import canned_replies, make_tokenizer
from interplay.generator.dialogue.conversation import Completion

# Output tokens per turn in the embedded corpora (`make reproduce`, zero-shot corpus on SmolLM2, max_tokens 64
# and 96): user 53.8 +- 17.7 (coefficient of variation 0.33), recommender 77.7 +- 27.3 (0.35); the other corpora
# range from 0.24 to 0.56.
EMBEDDED_MEAN_TOKENS = {"user": 54, "recommender": 78}
EMBEDDED_SPREAD = 0.35
SPREADS = (0.0, EMBEDDED_SPREAD, 0.55)  # equal lengths, the corpora's, the most varied corpus's
MAX_IN_FLIGHT = (64, 256, 1024, 4096)
UNLIMITED_KV_TOKENS = 10**12  # the replay bound's KV cache: never full
RATIOS = ("a_over_b", "a_over_d", "d_over_b")
# Dialogues per run: 3 x max_in_flight, and at least this many, so that the last conversations' drain (fewer and
# fewer in flight, which (d) without turn dependencies does not have) is a small part of every run.
MIN_DIALOGUES = 2048
# (ratio, its floor, the max_in_flight it applies at, None: every one). d_over_b >= 1: (d) is a bound.
TARGETS = (("a_over_b", 1.0, None), ("a_over_b", 1.3, 64), ("a_over_d", 0.95, None), ("d_over_b", 1.0, None))
LABEL = ("SIMULATION: tokens per virtual second of a step-time model of Llama-3.1-8B on one H100 "
         "(benchmarks/gpu_model.py), not measured on a GPU")


def reply_lengths(counts: Sequence[int], mean: float, spread: float, max_tokens: int) -> list[int]:
    """Output tokens per canned reply, with the given mean and coefficient of variation (`spread`) over the
    replies after clipping to 1..max_tokens, as the engine clips: c x (1 + k x z) of the canned lengths' z-scores,
    so the longer reply stays the longer one, with c and k fitted by bisection (the corpora's replies bunch up at
    max_tokens too, so their spread is measured after the clip as well)."""
    mu, sd = statistics.fmean(counts), statistics.pstdev(counts) or 1.0
    z = [(n - mu) / sd for n in counts]

    def lengths(c: float, k: float) -> list[int]:
        return [min(max(round(c * (1 + k * x)), 1), max_tokens) for x in z]

    def centred(k: float) -> list[int]:  # the c whose clipped lengths have the wanted mean
        lo, hi = 0.0, 4.0 * max_tokens
        for _ in range(40):
            c = (lo + hi) / 2
            lo, hi = (c, hi) if statistics.fmean(lengths(c, k)) < mean else (lo, c)
        return lengths((lo + hi) / 2, k)

    def cv(v: list[int]) -> float:
        return statistics.pstdev(v) / statistics.fmean(v)

    lo, hi = 0.0, 4.0
    for _ in range(40):
        k = (lo + hi) / 2
        lo, hi = (k, hi) if cv(centred(k)) < spread else (lo, k)
    return centred((lo + hi) / 2)


class SimClient:
    """RoleClient on a shared SimEngine: the canned reply picked by the seed, decoded for its rescaled length."""

    def __init__(self, role: str, tokenizer: Any, replies: Sequence[tuple[str, int]], lengths: Sequence[int],
                 engine: SimEngine, *, max_model_len: int, max_tokens: int):
        self.role, self.tokenizer, self.engine = role, tokenizer, engine
        self.texts, self.lengths = [t for t, _ in replies], list(lengths)
        self.max_model_len, self.max_tokens, self.model = max_model_len, max_tokens, "simulated-h100-llama-3.1-8b"
        self.kv_cache_tokens = engine.gpu.kv_cache_tokens  # as vLLM reports it at start
        self.num_openings = 0

    def render(self, messages: list[dict[str, str]], cache: Any = None) -> list[int]:
        return self.tokenizer.render(messages, cache)

    async def generate(self, request_id: str, prompt_token_ids: list[int], seed: int | None, *,
                       regex: str | None = None) -> Completion:
        k = (zlib.crc32(request_id.encode()) if seed is None else seed) % len(self.texts)  # one reply per request
        n, text = self.lengths[k], self.texts[k]
        if request_id.endswith("@0"):
            # A conversation's opening is numbered: sampled text never repeats across conversations, canned text
            # does (14 user lines), and then the recommender's prompts of different conversations would share
            # whole turns, which a cache that never evicts, (d)'s, finds across the run. Numbered, every prompt of
            # a conversation shares with other conversations only what a real run's do: the system prompts, and a
            # seed's own prefix (its user's preference summary) with that user's other seeds.
            self.num_openings += 1
            text = f"{self.num_openings}. {text}"
        num_prompt, num_cached = await self.engine.generate(prompt_token_ids, n)
        return Completion(text, num_prompt, n, num_cached, "length" if n >= self.max_tokens else "stop")


def sim_clients(config: Any, tokenizer: Any, titles: Sequence[str], engine: SimEngine,
                spread: float) -> dict[str, SimClient]:
    conv = config.conversation
    replies = canned_replies(titles, tokenizer, accept=conv.accept_marker, quit=conv.quit_marker)
    clients = {}
    for role in ("user", "recommender"):
        max_tokens = int(config.sampling(role)["max_tokens"])
        lengths = reply_lengths([n for _, n in replies[role]], EMBEDDED_MEAN_TOKENS[role], spread, max_tokens)
        clients[role] = SimClient(role, tokenizer, replies[role], lengths, engine,
                                  max_model_len=int(config.engine.get("max_model_len") or 2048), max_tokens=max_tokens)
    return clients


async def _on_engine(gpu: GpuModel, run: Any) -> tuple[SimEngine, Any, float]:
    """Run `run(engine)` with a fresh engine stepping beside it; (engine, its result, real CPU seconds)."""
    engine = SimEngine(gpu)
    stepper = asyncio.create_task(engine.run())
    cpu = time.process_time()
    try:
        result = await run(engine)
    finally:
        stepper.cancel()
    return engine, result, time.process_time() - cpu


def _cached_by_role(requests: Sequence[Request]) -> dict[str, float]:
    out = {}
    for role in ("user", "recommender"):
        prompt = sum(q.num_prompt_tokens for q in requests if q.role == role)
        out[role] = round(sum(q.num_cached_tokens for q in requests if q.role == role) / prompt, 4) if prompt else 0.0
    return out


def _figures(engine: SimEngine, requests: Sequence[Request], num_dialogues: int, cpu_s: float) -> dict[str, Any]:
    s, virtual = engine.stats, engine.now
    by_role = {r: [q.num_output_tokens for q in requests if q.role == r] for r in ("user", "recommender")}
    return {"simulated_s": round(virtual, 2), "num_requests": s.num_requests, "output_tokens": s.output_tokens,
            "output_tok_per_s": round(s.output_tokens / virtual, 1),
            "dialogues_per_s": round(num_dialogues / virtual, 3),
            "cached_prompt_share": round(s.cached_tokens / s.prompt_tokens, 4) if s.prompt_tokens else 0.0,
            # By role: set beside (d)'s, it says whose prefixes a scheduler leaves to the evicting cache.
            "cached_prompt_share_by_role": _cached_by_role(requests),
            "mean_prompt_tokens": round(s.prompt_tokens / s.num_requests, 1) if s.num_requests else 0.0,
            "mean_batch": round(s.seq_steps / s.num_steps, 1) if s.num_steps else 0.0, "num_steps": s.num_steps,
            "time_s": {"decode_floor": round(s.floor_s, 2), "decode_per_seq": round(s.per_seq_s, 2),
                       "prefill": round(s.prefill_s, 2)},
            "prefill_tokens": s.prefill_tokens, "evicted_blocks": s.evicted_blocks,
            "kv_held": round(s.held_block_s / virtual / engine.num_blocks, 3) if virtual else 0.0,
            "kv_cached": round(s.cached_block_s / virtual / engine.num_blocks, 3) if virtual else 0.0,
            "output_tokens_cv": {r: round(statistics.pstdev(v) / statistics.fmean(v), 3)
                                 for r, v in by_role.items() if v},
            # The simulated engine's pace against interplay's real CPU time per turn: the orchestration keeps up
            # with the GPU as long as real_turns_per_cpu_s is well above simulated_turns_per_s.
            "simulated_turns_per_s": round(s.num_requests / virtual, 1),
            "real_cpu_s": round(cpu_s, 2),
            "real_turns_per_cpu_s": round(s.num_requests / cpu_s, 1) if cpu_s > 0 else None}


async def compare(config: Any, tokenizer: Any, titles: Sequence[str], work: Path, *, spread: float,
                  gpu: GpuModel) -> dict[str, Any]:
    """(a), (b) and (d) of config.num_dialogues at config.max_in_flight, each on a fresh simulated engine."""
    from benchmarks.interleaved import opened
    from benchmarks.waves import run_waves
    from interplay.generator.runtime.run import Generation

    n, mif = config.num_dialogues, config.max_in_flight
    variants: dict[str, Any] = {}

    async def interleaved(engine: SimEngine) -> tuple[list[Request], Any]:
        recorded, rlog = recording(sim_clients(config, tokenizer, titles, engine, spread))
        generation = Generation(config, work / "a", overwrite=True)
        await generation.run(opened(recorded))
        return rlog.in_submission_order(), generation.scheduler

    engine, (requests, scheduler), cpu = await _on_engine(gpu, interleaved)
    variants["a_interleaved"] = {**_figures(engine, requests, n, cpu),
                                 "in_flight_cap": scheduler.admission.limit,
                                 "max_in_flight_seen": scheduler.stats.max_in_flight_seen}

    async def waves(engine: SimEngine) -> tuple[list[Request], dict]:
        recorded, rlog = recording(sim_clients(config, tokenizer, titles, engine, spread))
        _, info = await run_waves(config, recorded, work / "b")
        return rlog.requests, info

    engine, (wave_requests, info), cpu = await _on_engine(gpu, waves)
    variants["b_waves"] = {**_figures(engine, wave_requests, n, cpu), **info}

    async def replay(engine: SimEngine) -> list[Request]:
        semaphore = asyncio.Semaphore(mif)  # the most requests any scheduler has out; taken first in, first out

        async def one(req: Request) -> Request:
            async with semaphore:
                num_prompt, num_cached = await engine.generate(req.prompt, req.num_output_tokens)
            return dataclasses.replace(req, num_prompt_tokens=num_prompt, num_cached_tokens=num_cached)

        return list(await asyncio.gather(*(one(r) for r in requests)))

    # The bound: (a)'s requests with no turn dependencies, on an engine whose KV cache never evicts. On the real
    # cache the prefix-cache hits depend on the order the requests come in, so a replay there is no bound.
    engine, replayed, cpu = await _on_engine(dataclasses.replace(gpu, kv_cache_tokens=UNLIMITED_KV_TOKENS), replay)
    variants["d_replay"] = _figures(engine, replayed, n, cpu)
    tok = {k: v["output_tok_per_s"] for k, v in variants.items()}
    return {"max_in_flight": mif, "num_dialogues": n, "spread": spread,
            "a_over_b": ratio(tok["a_interleaved"], tok["b_waves"]),
            "a_over_d": ratio(tok["a_interleaved"], tok["d_replay"]),
            "d_over_b": ratio(tok["d_replay"], tok["b_waves"]), "variants": variants}


def simulated_gpu(max_in_flight: Sequence[int] = MAX_IN_FLIGHT, num_dialogues: int | None = None, *,
                  spreads: Sequence[float] = SPREADS, config_path: str | None = None, settings: Sequence[str] = (),
                  tokenizer: str = "smollm2", gpu: GpuModel | None = None) -> dict[str, Any]:
    """(a), (b), (d) on the simulated GPU at every max_in_flight and spread (num_dialogues: default
    max(3 x max_in_flight, MIN_DIALOGUES)). Returns simulated tokens/s ratios by max_in_flight and spread, the
    targets over that whole table, every run's figures, the model's parameters and the machine. Everything is
    labelled as a simulation. Each run has its own asyncio.run, so call it from synchronous code."""
    from interplay.generator.config import load_config, parse_override
    from interplay.generator.inputs.catalog import Catalog
    from interplay.generator.runtime.run import resolve_seeds

    gpu = gpu or GpuModel()
    base = load_config(config_path or str(ROOT / "configs" / "embedded.yaml"),
                       dict(parse_override(s) for s in settings))
    tok = make_tokenizer(tokenizer, base.engine_args("user")["model"] if tokenizer == "smollm2" else None)
    titles = [item.display for item, _ in zip(Catalog.load(resolve_seeds(base)[1]), range(500))]
    runs = []
    with tempfile.TemporaryDirectory(prefix="interplay-gpu-sim-") as tmp:
        for m in max_in_flight:
            for s in spreads:
                n = num_dialogues or max(3 * m, MIN_DIALOGUES)
                log(f"simulated GPU: {n} dialogues, max_in_flight={m}, spread={s}")
                config = base.model_validate({**base.model_dump(), "num_dialogues": n, "max_in_flight": m,
                                              "dialogues_per_shard": max(n, 1)})
                run = asyncio.run(compare(config, tok, titles, Path(tmp), spread=s, gpu=gpu))
                log(f"  a/b {run['a_over_b']}, a/d {run['a_over_d']}, d/b {run['d_over_b']} (simulated output "
                    "tok/s: " + ", ".join(f"{k} {v['output_tok_per_s']:.0f}" for k, v in run["variants"].items())
                    + ")")
                runs.append(run)
    table = {str(m): {str(r["spread"]): {**{k: r[k] for k in RATIOS},
                                         "a_output_tok_per_s": r["variants"]["a_interleaved"]["output_tok_per_s"]}
                      for r in runs if r["max_in_flight"] == m}
             for m in max_in_flight}
    return {"simulation": LABEL, "gpu_model": gpu.describe(), "tokenizer": tokenizer, "by_max_in_flight": table,
            "targets": targets(runs), "runs": runs, "machine": machine()}


def targets(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each target over the runs it applies to: met where all of them meet it; `worst`: the one closest to
    missing it."""
    out = {}
    for key, floor, at in TARGETS:
        some = [r for r in runs if at is None or r["max_in_flight"] == at]
        if some:
            worst = min(some, key=lambda r: r[key] or 0)
            out[f"{key} >= {floor} {'everywhere' if at is None else f'at {at} in flight'} (simulated)"] = {
                "met": all((r[key] or 0) >= floor for r in some), "worst": worst[key],
                "at": {"max_in_flight": worst["max_in_flight"], "spread": worst["spread"]}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-in-flight", type=int, nargs="+", default=list(MAX_IN_FLIGHT))
    parser.add_argument("--dialogues", type=int,
                        help=f"dialogues per run (default 3 x max_in_flight, at least {MIN_DIALOGUES})")
    parser.add_argument("--spreads", type=float, nargs="+", default=list(SPREADS),
                        help="coefficients of variation of reply lengths, each run at every max_in_flight "
                             f"(default: {EMBEDDED_SPREAD}, the embedded corpora's, and two around it)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "embedded.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--tokenizer", default="smollm2", choices=["smollm2", "simple"])
    parser.add_argument("--gpu", action="append", default=[], metavar="PARAMETER=VALUE",
                        help="override a parameter of the step-time model (benchmarks/gpu_model.py GpuModel), e.g. "
                             "kv_cache_tokens=4000000")
    args = parser.parse_args(argv)
    fields = GpuModel.__dataclass_fields__
    try:
        overrides = {k: type(getattr(GpuModel, k))(v) for k, _, v in (g.partition("=") for g in args.gpu)}
    except (AttributeError, ValueError) as e:
        parser.error(f"--gpu: {e}; parameters: {', '.join(fields)}")
    started = time.perf_counter()
    out = simulated_gpu(args.max_in_flight, args.dialogues, spreads=args.spreads,
                        config_path=args.config, settings=args.set, tokenizer=args.tokenizer,
                        gpu=GpuModel(**overrides))
    out["real_wall_s"] = round(time.perf_counter() - started, 1)
    out["results"] = str(write_results("gpu-sim", out))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
