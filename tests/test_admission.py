"""The admission cap (policy.KvAdmission): no more conversations in flight than the engine's KV cache can keep the
histories of, max_in_flight an upper bound, and a cap said in one line, once. Against the fake engine, no vLLM."""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Sequence

import pytest

from fake_engine import EngineLog, FakeClient, make_clients, split_request_id
from interplay.generator.runtime.policy import MIN_FINISHED, MIN_REACHED, KvAdmission
from test_scheduler import make_conversations, make_scheduler


def converse(admission: KvAdmission, conversation_id: str, tokens_added: list[int], *,
             shared: Sequence[int] = ()) -> None:
    """One conversation whose request i adds tokens_added[i] to its histories (roles alternate; every first prompt
    starts with `shared`, then its own tokens), then ends."""
    held = {"user": 0, "recommender": 0}
    own = zlib.crc32(conversation_id.encode())
    admission.start(conversation_id)
    for i, added in enumerate(tokens_added):
        role = ("user", "recommender")[i % 2]
        held[role] += added
        admission.add_turn(conversation_id, role, i, [*shared, *[own] * (held[role] - len(shared))], 0)
    admission.end(conversation_id)


def test_until_measured_a_conversation_counts_as_every_role_s_max_model_len() -> None:
    admission = KvAdmission(64, 10_000, max_requests=4, max_conversation_tokens=2 * 512)
    assert admission.limit == 10_000 // 1024
    for c in range(admission.limit - 1):  # one answer short of measuring request 0
        admission.start(f"c{c}")
        admission.add_turn(f"c{c}", "user", 0, [c] * 100, 0)
    assert admission.limit == 9


def test_a_request_index_is_measured_once_few_of_its_answers_are_still_out() -> None:
    admission = KvAdmission(1000, 100_000, max_requests=2, max_conversation_tokens=4096)
    for c in range(100):
        admission.start(f"c{c}")
    for c in range(60):  # the quickest answers: 60 in, 40 out
        admission.add_turn(f"c{c}", "user", 0, [c] * 100, 0)
    assert admission.limit == 100_000 // 4096
    for c in range(60, 80):  # 80 in, 20 out: a fifth
        admission.add_turn(f"c{c}", "user", 0, [c] * 100, 0)
    assert admission.limit == 100_000 // 200  # request 1 counts as request 0 until measured


def test_the_cap_is_the_cache_over_what_a_conversation_is_expected_to_reach() -> None:
    admission = KvAdmission(1000, 30_000, max_requests=4, max_conversation_tokens=4096)
    # Half the conversations end after request 1; the others run to 4 requests. Each request adds 100 tokens:
    # expected 100 + 100 + 0.5 x (100 + 100) = 300 tokens, not the 400 of the longest.
    for c in range(2 * MIN_REACHED):
        converse(admission, f"c{c}", [100] * (2 if c % 2 else 4))
    assert admission.conversation_tokens() == 300
    assert admission.limit == 30_000 // 300


def test_a_request_still_waiting_counts_as_one_that_does_not_end_its_conversation() -> None:
    admission = KvAdmission(1000, 30_000, max_requests=4, max_conversation_tokens=4096)
    # 40 conversations whose first reply was short and ended them are answered while 10 others still wait for
    # theirs: four in five ended at request 0 as far as is known, not all of them.
    for c in range(50):
        admission.start(f"c{c}")
    for c in range(40):
        admission.add_turn(f"c{c}", "user", 0, [c] * 100, 0)
        admission.end(f"c{c}")
    # 100, then requests 1 to 3, counted as the last measured (100), for the fifth not known to end: 160
    assert admission.conversation_tokens() == 160


def test_a_prefix_that_every_first_prompt_shares_is_not_counted_per_conversation() -> None:
    admission = KvAdmission(1000, 30_000, max_requests=2, max_conversation_tokens=4096)
    # Each role's first prompt: 60 tokens every conversation has (a system prompt), then 40 of its own.
    for c in range(2 * MIN_REACHED):
        converse(admission, f"c{c}", [100, 100], shared=list(range(60)))
    # 40 a role, but the first conversation, which had nothing to share with yet, counts 100.
    assert admission.conversation_tokens() == math.ceil(2 * (100 + 63 * 40) / 64)


def test_max_in_flight_is_an_upper_bound_and_no_size_means_no_cap() -> None:
    roomy = KvAdmission(16, 10**9, max_requests=4, max_conversation_tokens=4096)
    unknown = KvAdmission(16, None, max_requests=4, max_conversation_tokens=4096)
    for c in range(100):
        converse(roomy, f"c{c}", [100] * 4)
        converse(unknown, f"c{c}", [100] * 4)
    assert roomy.limit == unknown.limit == 16
    assert roomy.capped_note() is None and unknown.capped_note() is None


def test_the_cap_is_said_once_with_what_and_why() -> None:
    admission = KvAdmission(4096, 40_000, max_requests=4, max_conversation_tokens=4096)
    for c in range(MIN_FINISHED - 1):
        converse(admission, f"c{c}", [100] * 4)
    assert admission.capped_note() is None  # not before it rests on whole conversations
    converse(admission, "last", [100] * 4)
    note = admission.capped_note()
    assert note is not None and "\n" not in note
    assert "max_in_flight 4096 capped at 100 conversations" in note
    assert "40,000 tokens" in note and "about 400 tokens" in note
    assert admission.capped_note() is None


def kv_clients(log: EngineLog, kv_cache_tokens: int | None) -> dict[str, FakeClient]:
    clients = make_clients(log, max_model_len=512)
    for client in clients.values():
        client.kv_cache_tokens = kv_cache_tokens
    return clients


def run_capped(kv_cache_tokens: int | None, *, max_in_flight: int = 64, num_conversations: int = 300):
    """(scheduler, finished conversations, notes, engine log, in flight and cap at each conversation's start)."""
    log, notes, starts = EngineLog(), [], []
    clients = kv_clients(log, kv_cache_tokens)
    scheduler, finished = make_scheduler(clients, max_in_flight=max_in_flight, max_turns=6)
    scheduler.notify = notes.append

    def on_submit(request_id: str) -> None:  # the first request is sent in the same step as the start
        if split_request_id(request_id)[1] == 0:
            starts.append((scheduler.stats.num_in_flight, scheduler.admission.limit))

    for client in clients.values():
        client.on_submit = on_submit
    # A worker left waiting when the plan runs out would hang the run: a timeout makes that a failure.
    asyncio.run(asyncio.wait_for(scheduler.run(iter(make_conversations(num_conversations))), timeout=60))
    return scheduler, finished, notes, log, starts


def test_the_scheduler_starts_no_conversation_above_the_cap_and_says_it_once() -> None:
    scheduler, finished, notes, log, starts = run_capped(3_000)
    assert len(finished) == 300 and scheduler.stats.num_in_flight == 0
    assert all(n <= cap for n, cap in starts)
    cap = scheduler.admission.limit
    assert 1 < cap < 64 and scheduler.stats.max_in_flight_seen < 64
    assert log.max_in_flight_conversations < 64
    assert len(notes) == 1 and "max_in_flight 64 capped at" in notes[0] and "3,000 tokens" in notes[0]


def test_without_a_kv_cache_size_max_in_flight_is_reached_and_nothing_is_said() -> None:
    scheduler, finished, notes, log, _ = run_capped(None, max_in_flight=8, num_conversations=100)
    assert len(finished) == 100 and scheduler.stats.max_in_flight_seen == 8 and notes == []


def test_stop_wakes_the_workers_waiting_under_the_cap() -> None:
    log = EngineLog()
    clients = kv_clients(log, 3_000)  # a cap of a few conversations: most workers wait
    scheduler, finished = make_scheduler(clients, max_in_flight=64, max_turns=6)
    scheduler.notify = lambda note: None

    async def main() -> None:
        run = asyncio.create_task(scheduler.run(iter(make_conversations(500))))
        while scheduler.stats.num_finished < 10:
            await asyncio.sleep(0.001)
        scheduler.stop()
        await asyncio.wait_for(run, timeout=10)

    asyncio.run(main())
    assert 10 <= len(finished) < 500 and scheduler.stats.num_in_flight == 0


@pytest.mark.parametrize("kv_cache_tokens", [200, 6_000])
def test_every_conversation_finishes_exactly_once_under_the_cap(kv_cache_tokens: int) -> None:
    _, finished, _, log, _ = run_capped(kv_cache_tokens, num_conversations=120)
    assert sorted(c.conversation_id for c in finished) == [f"c{i:03d}" for i in range(120)]
    assert log.overlaps == []
