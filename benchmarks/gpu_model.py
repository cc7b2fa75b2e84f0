"""A simulated GPU engine: vLLM-style continuous batching on a virtual clock, with a step-time model of
Llama-3.1-8B (bf16) on one H100 80GB SXM. A simulation, not a measurement: no GPU is used and no time is slept.

Each engine step, as vLLM V1's scheduler does it: every running request in its decode phase gets one token,
requests part-way through their prompt get their next chunk, then waiting requests are admitted first in,
first out, while fewer than `max_num_seqs` run, the step's token budget `max_num_batched_tokens` lasts (chunked
prefill: a long prompt is split over steps) and the KV cache has room for the request's prompt and output. The
step that computes a prompt's last token also samples its first output token.

Duration of one step (seconds):

    t = t_decode(n) + prefill_s_per_token * p
    t_decode(n) = decode_floor_s                                     n <= knee_seqs
                = decode_floor_s + decode_s_per_seq * (n - knee_seqs)  n >  knee_seqs

n is the number of sequences in the step, p the prompt tokens computed in it; prefix-cached prompt tokens are
not computed and cost nothing. Below the knee a decode step is bound by reading the weights once, whatever the
batch; above it, by compute and by reading each sequence's KV cache, which grow with the batch. Attention cost
is not a separate term: it is folded into `decode_s_per_seq`, calibrated on prompts of a few hundred tokens.

KV cache, as vLLM's KV cache manager keeps it (vllm/v1/core/kv_cache_manager.py, block_pool.py): blocks of 16
tokens; a prompt's full blocks are named by a hash chain over its ids. A running request holds its prompt's
blocks, shared with every other request that holds the same ones (a common prefix is stored once), and blocks
of its own for its prompt's partial last block and its output, all reserved on admission (vLLM reserves the
prompt and preempts a running request when an output block is missing; this does not model preemption). A
request's cached prefix is its leading blocks found held or cached, up to its prompt's length less one token.
When no request holds a hashed block any more it stays cached, and cached blocks are evicted first freed,
first evicted; a request's blocks are freed tail first, so a prompt loses its tail before its head. Output
blocks are not hashed here (their token ids are not known), so a turn's reply is computed again as part of the
next prompt of its role, where vLLM would find it cached: the same for every variant.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass

BLOCK = 16  # tokens per KV block (vLLM's default block_size)


@dataclass(frozen=True)
class GpuModel:
    """Step-time and capacity parameters; the defaults are Llama-3.1-8B bf16 on one H100 80GB SXM (approximate)."""

    # Decode step at small batch: the 16.1 GB of bf16 weights read once from HBM3 at 3.35 TB/s (H100 SXM
    # datasheet) is 4.8 ms; kernel launches and sampling add to it. 7 ms is an estimate on that basis, not
    # calibrated on one published measurement. Approximate.
    decode_floor_s: float = 0.007
    # Batch size up to which a decode step costs about the same: where 2 x 8e9 FLOPs per token at ~50% of the
    # H100's 989 dense bf16 TFLOP/s (~32 us per sequence) starts to add up next to the 4.8 ms weight read.
    # Approximate (a roofline estimate, not a measurement).
    knee_seqs: int = 64
    # Added decode time per sequence above the knee. Calibrated so that this model reproduces Lambda Labs'
    # published vLLM 0.6.0 figure for Llama-3.1-8B on 1x H100-80GB-SXM (github.com/LambdaLabsML/vllm-benchmark,
    # benchmark_v0.md: ShareGPT, max-num-seqs 256, 8,088 output tok/s, median TPOT 25.6 ms): 256 sequences
    # of ~220 prompt and ~200 output tokens give 256 decodes and ~280 prompt tokens per step, 31.6 ms a step
    # = 7 ms + 192 x 0.08 ms + 280 x 33 us. Approximate.
    decode_s_per_seq: float = 0.00008
    # Prefill cost per computed prompt token: compute-bound, 2 x 8e9 FLOPs at ~50% of 989 TFLOP/s = 32 us, i.e.
    # ~30,000 prompt tok/s. A roofline estimate, approximate.
    prefill_s_per_token: float = 0.000033
    # vLLM V1's defaults on GPUs of 70 GiB or more other than the A100 (vllm/engine/arg_utils.py,
    # get_batch_defaults: max_num_seqs 1024; max_num_batched_tokens 8192 for the OpenAI server, 16384 for LLM).
    max_num_seqs: int = 1024
    max_num_batched_tokens: int = 8192
    # KV cache in tokens: 0.90 x 79.6 GiB - 15.0 GiB of weights - ~3 GiB of activations and CUDA graphs
    # = ~53.6 GiB, at 128 KiB per token (2 x 32 layers x 8 KV heads x 128 x 2 bytes) = ~440,000 tokens.
    # Cross-check: the same arithmetic for an H100 NVL (93.6 GiB) gives ~542,000 tokens, and a public table of
    # vLLM's KV cache capacity lists 542,960 for Llama-3.1-8B-Instruct there.
    kv_cache_tokens: int = 440_000

    def step_seconds(self, num_seqs: int, num_prefill_tokens: int) -> float:
        decode = self.decode_floor_s + self.decode_s_per_seq * max(num_seqs - self.knee_seqs, 0)
        return decode + self.prefill_s_per_token * num_prefill_tokens

    def describe(self) -> dict[str, float | int]:
        return asdict(self)


def block_hashes(prompt: Sequence[int]) -> list[int]:
    """Hash chain of the prompt's full blocks: a block's hash covers every token before it, as in vLLM."""
    hashes, parent = [], 0
    for start in range(0, len(prompt) - BLOCK + 1, BLOCK):
        parent = hash((parent, tuple(prompt[start:start + BLOCK])))
        hashes.append(parent)
    return hashes


@dataclass(eq=False)
class SimRequest:
    prompt_len: int
    num_output: int
    hashes: list[int]
    future: asyncio.Future
    num_cached: int = 0
    num_to_prefill: int = 0
    num_blocks: int = 0


@dataclass
class EngineStats:
    num_steps: int = 0
    num_requests: int = 0
    output_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    busy_s: float = 0.0  # virtual seconds spent in steps
    seq_steps: int = 0   # sum over steps of the batch size, for the mean batch
    # busy_s by term of the step cost: the decode floor, the decode cost per sequence above the knee, prefill
    floor_s: float = 0.0
    per_seq_s: float = 0.0
    prefill_s: float = 0.0
    prefill_tokens: int = 0  # prompt tokens computed (not found in the prefix cache)
    evicted_blocks: int = 0
    held_block_s: float = 0.0    # blocks held by running requests x virtual seconds, for the mean occupancy
    cached_block_s: float = 0.0  # blocks only in the prefix cache x virtual seconds


class SimEngine:
    """One simulated engine on a virtual clock (`now`, seconds). `generate` returns after the virtual step that
    samples the request's last token; the clock moves only by steps, never while the engine is idle."""

    def __init__(self, gpu: GpuModel | None = None):
        self.gpu = gpu or GpuModel()
        self.now = 0.0
        self.stats = EngineStats()
        self._waiting: deque[SimRequest] = deque()
        self._prefilling: list[SimRequest] = []
        self._decoding: list[tuple[int, int, SimRequest]] = []  # heap of (finishing step, order, request)
        self._order = itertools.count()
        self.num_blocks = self.gpu.kv_cache_tokens // BLOCK
        self._held: dict[int, int] = {}  # hashed blocks running requests hold: their number of holders
        self._num_private = 0  # blocks one running request holds unhashed: its prompt's partial last block, output
        self._cached: OrderedDict[int, None] = OrderedDict()  # hashed blocks nobody holds, first freed first
        self._wake = asyncio.Event()
        self._num_submitted = 0

    async def generate(self, prompt: Sequence[int], num_output: int) -> tuple[int, int]:
        """Decode `num_output` tokens after `prompt`; returns (prompt tokens, prefix-cached prompt tokens)."""
        num_output = max(int(num_output), 1)
        request = SimRequest(len(prompt), num_output, block_hashes(prompt), asyncio.get_running_loop().create_future())
        request.num_blocks = -(-(len(prompt) + num_output) // BLOCK)
        if request.num_blocks > self.num_blocks:
            raise ValueError(f"a request of {len(prompt) + num_output} tokens does not fit the KV cache")
        self._waiting.append(request)
        self._num_submitted += 1
        self._wake.set()
        await request.future
        return request.prompt_len, request.num_cached

    async def run(self) -> None:
        """The step loop; runs until cancelled."""
        while True:
            if not (self._waiting or self._prefilling or self._decoding):
                self._wake.clear()
                await self._wake.wait()
            self.step()
            await self._settle()

    async def _settle(self) -> None:
        """Let the callers woken by this step submit their next requests before the next step: their own work
        (parsing, rendering) takes real CPU time but no virtual time, as if it overlapped the GPU's work."""
        quiet = 0
        while quiet < 2:
            before = self._num_submitted
            await asyncio.sleep(0)
            quiet = quiet + 1 if self._num_submitted == before else 0

    def step(self) -> None:
        step = self.stats.num_steps
        budget = self.gpu.max_num_batched_tokens - len(self._decoding)
        num_seqs, num_prefill = len(self._decoding), 0
        still: list[SimRequest] = []
        for request in self._prefilling:  # continuing chunked prefills come before new requests
            chunk = min(request.num_to_prefill, max(budget, 0))
            budget -= chunk
            num_prefill += chunk
            num_seqs += chunk > 0
            request.num_to_prefill -= chunk
            (self._prefilled(request, step) if request.num_to_prefill == 0 else still.append(request))
        self._prefilling = still
        while (self._waiting and budget > 0 and len(self._decoding) + len(self._prefilling) < self.gpu.max_num_seqs
               and self._admit(self._waiting[0])):
            request = self._waiting.popleft()
            chunk = min(request.num_to_prefill, budget)
            budget -= chunk
            num_prefill += chunk
            num_seqs += 1
            request.num_to_prefill -= chunk
            (self._prefilled(request, step) if request.num_to_prefill == 0 else self._prefilling.append(request))
        seconds = self.gpu.step_seconds(num_seqs, num_prefill)
        self.now += seconds
        s = self.stats
        s.num_steps, s.busy_s, s.seq_steps = step + 1, s.busy_s + seconds, s.seq_steps + num_seqs
        per_seq = self.gpu.decode_s_per_seq * max(num_seqs - self.gpu.knee_seqs, 0)
        s.floor_s += self.gpu.decode_floor_s
        s.per_seq_s += per_seq
        s.prefill_s += seconds - self.gpu.decode_floor_s - per_seq
        s.prefill_tokens += num_prefill
        s.held_block_s += (len(self._held) + self._num_private) * seconds
        s.cached_block_s += len(self._cached) * seconds
        while self._decoding and self._decoding[0][0] <= step:
            self._finish(heapq.heappop(self._decoding)[2])

    def _admit(self, request: SimRequest) -> bool:
        """Take the request's blocks, sharing those already in the KV cache; False if they do not fit.

        As vLLM's KV cache manager does (vllm/v1/core/kv_cache_manager.py, allocate_slots; block_pool.py): a block
        that a running request holds is shared, not counted again; a block found in the prefix cache is taken out
        of it (it stays cached, and is held); only blocks not found anywhere are new. The prompt's full blocks are
        hashed as they are computed, so the next request with the same prefix finds them even while this one runs.
        """
        limit = (request.prompt_len - 1) // BLOCK  # vLLM looks up num_tokens - 1: the last token is computed
        num_hit = 0
        for h in request.hashes[:limit]:
            if h not in self._held and h not in self._cached:
                break
            num_hit += 1
        num_private = request.num_blocks - len(request.hashes)
        cost = sum(h not in self._held for h in request.hashes) + num_private
        if cost > self.num_blocks - len(self._held) - self._num_private:  # cached blocks can be evicted
            return False
        for h in request.hashes:
            self._held[h] = self._held.get(h, 0) + 1
            self._cached.pop(h, None)
        self._num_private += num_private
        while len(self._cached) > self.num_blocks - len(self._held) - self._num_private:
            self._cached.popitem(last=False)
            self.stats.evicted_blocks += 1
        request.num_cached = num_hit * BLOCK
        request.num_to_prefill = request.prompt_len - request.num_cached
        return True

    def _prefilled(self, request: SimRequest, step: int) -> None:
        """The prompt's last chunk ran in `step`, which sampled the first output token."""
        heapq.heappush(self._decoding, (step + request.num_output - 1, next(self._order), request))

    def _finish(self, request: SimRequest) -> None:
        # Freed tail first, as vLLM frees a request's blocks, so the prompt's tail is evicted before its head:
        # a hash chain evicted from the head would leave its tail cached but never found.
        for h in reversed(request.hashes):
            self._held[h] -= 1
            if not self._held[h]:
                del self._held[h]
                self._cached[h] = None
        self._num_private -= request.num_blocks - len(request.hashes)
        s = self.stats
        s.num_requests += 1
        s.output_tokens += request.num_output
        s.prompt_tokens += request.prompt_len
        s.cached_tokens += request.num_cached
        if not request.future.done():
            request.future.set_result(None)
