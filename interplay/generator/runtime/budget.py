"""A budget of CPU work per pass of the event loop, so that a flood of ready conversations cannot starve it.

asyncio runs every callback that is ready before it looks at timers and I/O again. When hundreds of
conversations are ready at once (a fast engine answering a whole batch, or the zero-latency engine of the
benchmarks, where all are ready all the time), one pass of the loop is a whole round of turns: at 128 in flight
on a 2-core CPU the loop came back to anything else only every 87 ms (median; benchmarks/scale.py), vLLM's own
output handler included. With the budget, at most `per_pass` turns start their CPU work (rendering the prompt)
per pass; a worker past it waits, first come first served, for a later pass. The work is the same, only its
order changes: throughput stays, and the loop's lateness becomes that of a few turns.
"""

from __future__ import annotations

import asyncio
from collections import deque

TURNS_PER_PASS = 16  # ~4 ms of interplay's work per pass here; more passes cost a select() each (~20 us)


class LoopBudget:
    def __init__(self, per_pass: int = TURNS_PER_PASS):
        self.per_pass = per_pass
        self._used = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._pass_scheduled = False

    async def take(self) -> None:
        """Return at once while this pass has budget left, else when a later pass gives this caller its turn."""
        self._schedule_next_pass()
        if self._used < self.per_pass and not self._waiting:
            self._used += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        await waiter

    def _schedule_next_pass(self) -> None:
        # call_soon runs after everything ready now: that is, on the loop's next pass.
        if not self._pass_scheduled:
            self._pass_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_pass)

    def _next_pass(self) -> None:
        self._pass_scheduled = False
        self._used = 0
        while self._waiting and self._used < self.per_pass:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a cancelled worker's turn is skipped
                waiter.set_result(None)
                self._used += 1
        if self._waiting or self._used:
            self._schedule_next_pass()
