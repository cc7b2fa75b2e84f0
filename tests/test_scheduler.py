"""The scheduler's invariants, against the fake engine (milliseconds per turn, no vLLM)."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import pytest

from conftest import make_catalog, make_seeds
from fake_engine import EngineLog, FakeClient, make_clients
from interplay.generator.dialogue.conversation import Conversation, Outcome, turn_seed
from interplay.generator.dialogue.parsing import ReplyParser
from interplay.generator.dialogue.prompts import role_messages
from interplay.generator.inputs.catalog import Catalog
from interplay.generator.inputs.seeds import Seed
from interplay.generator.runtime.policy import InterplayPolicy
from interplay.generator.runtime.scheduler import EngineDead, Scheduler

NEUTRAL = {"user": ("I want something tense tonight.", "Anything else?"),
           "recommender": ("What do you like?", "Do you prefer comedies or dramas?")}


def messages(conv: Conversation, role: str) -> list[dict[str, str]]:
    return role_messages(role, "sys", conv.history)


def make_conversations(n: int) -> list[Conversation]:
    return [Conversation(f"c{i:03d}", i, seed) for i, seed in enumerate(make_seeds(n))]


def make_scheduler(clients: dict[str, FakeClient], *, max_in_flight: int = 8, max_turns: int = 6,
                   run_seed: int | None = 0, catalog: Catalog | None = None,
                   on_finished: Callable[[Conversation], None] | None = None) -> tuple[Scheduler, list[Conversation]]:
    finished: list[Conversation] = []

    def record(conv: Conversation) -> None:
        finished.append(conv)
        if on_finished is not None:
            on_finished(conv)

    policy = InterplayPolicy(messages, catalog=catalog or make_catalog(), parser=ReplyParser(), max_turns=max_turns)
    scheduler = Scheduler(clients, policy, max_in_flight=max_in_flight, run_seed=run_seed, on_finished=record)
    return scheduler, finished


def run(clients: dict[str, FakeClient], conversations: Iterable[Conversation],
        **kw) -> tuple[Scheduler, list[Conversation]]:
    scheduler, finished = make_scheduler(clients, **kw)
    asyncio.run(scheduler.run(iter(conversations)))
    return scheduler, finished


def test_in_flight_is_bounded_and_reached() -> None:
    log = EngineLog()
    convs = make_conversations(100)
    scheduler, finished = run(make_clients(log), convs, max_in_flight=8)
    assert len(finished) == 100
    assert log.max_in_flight == 8                  # requests at once
    assert log.max_in_flight_conversations == 8    # distinct conversations with a pending request
    assert log.max_active_conversations() == 8     # conversations begun and not yet ended
    assert log.overlaps == []                      # never two pending requests of one conversation
    assert scheduler.stats.max_in_flight_seen == 8
    assert scheduler.stats.num_in_flight == 0
    assert log.in_flight == 0
    # Each conversation's requests are strictly sequential: the next is sent after the previous returned.
    for conv in convs:
        calls = log.calls_of(conv.conversation_id)
        assert [c.turn for c in calls] == list(range(len(calls)))
        assert all(b.submitted >= a.finished for a, b in zip(calls, calls[1:]))


def test_no_waves_a_slow_conversation_blocks_nobody() -> None:
    slow = "c000"
    log = EngineLog()
    clients = make_clients(log,
                           delay=lambda rid, seed: 0.5 if rid.startswith(slow + "@") else 0.001,
                           user={"replies": NEUTRAL["user"]}, recommender={"replies": NEUTRAL["recommender"]})
    convs = make_conversations(100)
    scheduler, finished = run(clients, convs, max_in_flight=4, max_turns=2)
    order = [c.conversation_id for c in finished]
    assert sorted(order) == sorted(c.conversation_id for c in convs)
    slow_calls = log.calls_of(slow)
    assert len(slow_calls) == 2
    slow_end = slow_calls[-1].finished
    done_before = [c for c in log.conversation_ids() if c != slow and log.calls_of(c)[-1].finished < slow_end]
    assert len(done_before) >= 50, f"only {len(done_before)} conversations finished while the slow one ran"
    assert order.index(slow) >= 50
    # The other three workers kept the engine busy while the slow first turn was pending (a wave of four would
    # send at most 6 other requests).
    first = slow_calls[0]
    during = [c for c in log.calls if c.conversation_id != slow and first.submitted <= c.submitted < first.finished]
    assert len(during) >= 30
    assert log.max_in_flight == 4


def test_every_conversation_finishes_exactly_once() -> None:
    calls: Counter[int] = Counter()
    convs = make_conversations(60)
    scheduler, finished = run(make_clients(), convs, max_in_flight=7,
                              on_finished=lambda c: calls.update([c.conversation_index]))
    assert calls == Counter(range(60))
    assert all(v == 1 for v in calls.values())
    assert {id(c) for c in finished} == {id(c) for c in convs}
    assert all(c.is_finished for c in convs)
    assert scheduler.stats.num_finished == 60
    assert sum(scheduler.stats.by_outcome.values()) == 60
    assert scheduler.stats.by_outcome == dict(Counter(c.outcome.value for c in convs))
    assert scheduler.stats.num_turns == sum(len(c.turns) for c in convs)
    assert scheduler.stats.num_output_tokens == sum(t.num_output_tokens for c in convs for t in c.turns)


def test_roles_alternate_starting_with_user() -> None:
    log = EngineLog()
    convs = make_conversations(40)
    run(make_clients(log), convs, max_in_flight=5, max_turns=7)
    assert len(log.calls) == sum(len(c.turns) for c in convs)
    multi = 0
    for conv in convs:
        roles = [t.role for t in conv.turns]
        assert roles == ["user", "recommender"] * (len(roles) // 2) + ["user"] * (len(roles) % 2)
        assert [c.role for c in log.calls_of(conv.conversation_id)] == roles
        multi += len(roles) >= 3
    assert multi >= 10  # the canned replies do give multi-turn conversations


@pytest.mark.parametrize("max_turns", [2, 5, 8])
def test_max_turns(max_turns: int) -> None:
    convs = make_conversations(30)
    run(make_clients(), convs, max_in_flight=6, max_turns=max_turns)
    assert all(1 <= len(c.turns) <= max_turns for c in convs)
    for conv in convs:
        if conv.outcome == Outcome.MAX_TURNS:
            assert len(conv.turns) == max_turns
        else:  # ended early by a marker
            assert conv.outcome in (Outcome.ACCEPTED, Outcome.GAVE_UP)
            assert conv.turns[-1].role == "user"

    neutral = make_conversations(20)
    run(make_clients(user={"replies": NEUTRAL["user"]}, recommender={"replies": NEUTRAL["recommender"]}),
        neutral, max_in_flight=6, max_turns=max_turns)
    assert {c.outcome for c in neutral} == {Outcome.MAX_TURNS}
    assert {len(c.turns) for c in neutral} == {max_turns}
    assert all(c.error is None for c in neutral)


def test_context_limit() -> None:
    log = EngineLog()
    clients = make_clients(log, user={"replies": NEUTRAL["user"]},
                           recommender={"replies": NEUTRAL["recommender"], "max_model_len": 90, "max_tokens": 40})
    convs = make_conversations(10)
    run(clients, convs, max_in_flight=3, max_turns=40)
    assert log.oversized == []  # no request was sent that would not fit
    for conv in convs:
        assert conv.outcome == Outcome.CONTEXT_LIMIT
        assert conv.next_role == "recommender"
        m = re.search(r"recommender prompt of (\d+) tokens", conv.error or "")
        assert m, conv.error
        size = int(m.group(1))
        rec = clients["recommender"]
        assert size == len(rec.render(messages(conv, "recommender")))
        assert size + rec.max_tokens > rec.max_model_len
        assert "max_model_len 90" in conv.error
        # Every recommender request that was sent did fit, and the conversation got some turns first.
        sent = [c for c in log.calls_of(conv.conversation_id) if c.role == "recommender"]
        assert sent and all(c.prompt_len + 40 <= 90 for c in sent)
        assert len(conv.turns) == len(log.calls_of(conv.conversation_id)) >= 3


def test_context_limit_on_the_first_turn() -> None:
    log = EngineLog()
    convs = make_conversations(3)
    run(make_clients(log, user={"max_model_len": 20, "max_tokens": 16}), convs, max_in_flight=2)
    assert log.calls == []
    assert all(c.outcome == Outcome.CONTEXT_LIMIT and c.turns == [] for c in convs)
    assert all(c.error.startswith("user prompt of ") for c in convs)


def test_one_failing_request_ends_only_its_conversation() -> None:
    log = EngineLog()
    clients = make_clients(log, fail_on=lambda rid: rid == "c005@1", user={"replies": NEUTRAL["user"]},
                           recommender={"replies": NEUTRAL["recommender"]})
    convs = make_conversations(30)
    scheduler, finished = run(clients, convs, max_in_flight=6, max_turns=4)
    bad = convs[5]
    assert bad.outcome == Outcome.ERROR
    assert bad.error == "recommender turn 1: RuntimeError: boom at c005@1"
    assert len(bad.turns) == 1
    assert bad in finished
    others = [c for c in convs if c is not bad]
    assert {c.outcome for c in others} == {Outcome.MAX_TURNS}
    assert all(len(c.turns) == 4 and c.error is None for c in others)
    assert len(finished) == 30
    assert scheduler.stats.by_outcome == {"error": 1, "max_turns": 29}


def test_engine_dead_stops_the_run_and_leaves_no_task() -> None:
    log = EngineLog()
    clients = make_clients(log, dead_on=lambda rid: rid == "c010@0")
    convs = make_conversations(60)
    scheduler, finished = make_scheduler(clients, max_in_flight=6)

    async def main() -> tuple[set[asyncio.Task], int]:
        with pytest.raises(EngineDead, match="c010@0"):
            await scheduler.run(iter(convs))
        left = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        num_calls = len(log.calls)
        await asyncio.sleep(0.05)  # nothing keeps submitting in the background
        assert len(log.calls) == num_calls
        return left, num_calls

    left, num_calls = asyncio.run(main())
    assert left == set()
    assert log.in_flight == 0 and scheduler.stats.num_in_flight == 0
    assert all(c.finished is not None for c in log.calls)
    assert {c.result for c in log.calls} <= {"ok", "dead", "cancelled"}
    assert [c.request_id for c in log.calls if c.result == "dead"] == ["c010@0"]
    assert convs[10] not in finished and not convs[10].is_finished
    assert len(finished) < 60  # the run stopped
    assert all(c.is_finished for c in finished)


def test_stop_starts_no_new_conversation_and_finishes_active_ones() -> None:
    log = EngineLog()
    taken: list[int] = []
    at_stop: dict[str, object] = {}
    convs = make_conversations(100)
    holder: dict[str, Scheduler] = {}

    def on_finished(conv: Conversation) -> None:
        if len(finished) == 10 and not holder["s"].is_stopping:
            holder["s"].stop()
            at_stop["taken"] = list(taken)
            at_stop["finished"] = len(finished)

    def plan() -> Iterator[Conversation]:
        for conv in convs:
            taken.append(conv.conversation_index)
            yield conv

    scheduler, finished = make_scheduler(make_clients(log), max_in_flight=8, on_finished=on_finished)
    holder["s"] = scheduler
    asyncio.run(scheduler.run(plan()))
    assert at_stop["finished"] == 10
    assert taken == at_stop["taken"]                       # no conversation taken after stop()
    assert len(taken) == 10 + 7                            # the 7 others active at that moment
    assert {c.conversation_index for c in finished} == set(taken)
    assert len(finished) == len(taken)                     # and they all ran to their end
    assert all(convs[i].is_finished and convs[i].outcome != Outcome.ERROR for i in taken)
    assert set(log.conversation_ids()) == {f"c{i:03d}" for i in taken}


def transcript(conv: Conversation) -> tuple:
    return (conv.outcome, conv.accepted_item_id,
            tuple((t.role, t.raw_text, t.text, t.num_prompt_tokens, t.num_output_tokens, tuple(t.item_ids))
                  for t in conv.turns))


def test_same_plan_gives_same_turns_whatever_the_scheduling() -> None:
    runs = []
    for max_in_flight, delay in ((3, lambda rid, seed: 0.0003 * (seed % 5)),
                                 (16, lambda rid, seed: 0.0003 * (4 - seed % 5))):
        convs = make_conversations(40)
        _, finished = run(make_clients(delay=delay), convs, max_in_flight=max_in_flight, run_seed=11)
        runs.append(({c.conversation_id: transcript(c) for c in convs}, [c.conversation_id for c in finished]))
    (first, order1), (second, order2) = runs
    assert first == second
    assert order1 != order2                         # the scheduling really differed
    assert len(set(first.values())) > 20            # and conversations differ from each other
    # Another run seed gives other dialogues.
    convs = make_conversations(40)
    run(make_clients(), convs, max_in_flight=4, run_seed=12)
    assert {c.conversation_id: transcript(c) for c in convs} != first


def test_turn_seeds_are_per_conversation_and_turn() -> None:
    log = EngineLog()
    convs = make_conversations(10)
    run(make_clients(log), convs, max_in_flight=4, run_seed=3)
    for call in log.calls:
        assert call.seed == turn_seed(3, call.conversation_id, call.turn)
    assert len({c.seed for c in log.calls}) == len(log.calls)


def test_no_run_seed_sends_no_seed() -> None:
    log = EngineLog()
    _, finished = run(make_clients(log), make_conversations(10), max_in_flight=4, run_seed=None)
    assert len(finished) == 10 and log.calls and {c.seed for c in log.calls} == {None}


def scripted(script: dict[str, str]) -> Callable[[str, int], str]:
    def reply(request_id: str, seed: int) -> str:
        return script.get(request_id, "Do you prefer comedies or dramas?" if request_id.endswith(
            ("@1", "@3", "@5", "@7")) else "Hmm, tell me more.")
    return reply


def test_accept_after_a_grounded_recommendation() -> None:
    script = {
        # accepted: the user names one of the recommended items
        "c000@0": "I want a crime film.",
        "c000@1": "How about Heat (1995) or Fargo (1996)?",
        "c000@2": "Fargo (1996) it is! [ACCEPT]",
        # accepted without naming: the latest recommendation
        "c001@0": "Something funny.",
        "c001@1": "Try Toy Story (1995).",
        "c001@2": "Hmm, what else?",
        "c001@3": "Then Groundhog Day (1993), a light comedy.",
        "c001@4": "Sounds good, I'll watch it. [ACCEPT]",
        # the accept marker before anything was recommended is ignored, and the dialogue goes on
        "c002@0": "[ACCEPT] Sounds good!",
        "c002@1": "What do you like?",
        "c002@2": "Old sci-fi.",
        "c002@3": "Alien (1979) is a classic.",
        "c002@4": "Great. [ACCEPT]",
        # an accept after a recommender turn that named nothing in the catalog is ignored too
        "c003@0": "Hi there.",
        "c003@1": "You could try Unknown Movie (2001).",
        "c003@2": "Okay, I take it [ACCEPT]",
        # quit
        "c004@0": "Hello.",
        "c004@1": "The Matrix (1999)?",
        "c004@2": "No thanks, bye. [QUIT]",
    }
    clients = make_clients(replies=scripted(script))
    convs = make_conversations(5)
    run(clients, convs, max_in_flight=3, max_turns=6)
    c0, c1, c2, c3, c4 = convs

    assert (c0.outcome, c0.accepted_item_id, len(c0.turns)) == (Outcome.ACCEPTED, "m3", 3)
    assert c0.recommended_item_ids == ["m1", "m3"]
    assert c0.turns[-1].text == "Fargo (1996) it is!"

    assert (c1.outcome, c1.accepted_item_id, len(c1.turns)) == (Outcome.ACCEPTED, "m7", 5)

    assert c2.turns[0].note == "accept marker before any recommendation, ignored"
    assert c2.turns[0].text == "Sounds good!"
    assert c2.turns[1].role == "recommender"
    assert (c2.outcome, c2.accepted_item_id, len(c2.turns)) == (Outcome.ACCEPTED, "m5", 5)

    assert c3.recommended_item_ids == []
    assert c3.turns[2].note == "accept marker before any recommendation, ignored"
    assert (c3.outcome, c3.accepted_item_id, len(c3.turns)) == (Outcome.MAX_TURNS, None, 6)

    assert (c4.outcome, c4.accepted_item_id, len(c4.turns)) == (Outcome.GAVE_UP, None, 3)
    assert c4.turns[-1].text == "No thanks, bye."


def test_target_rank() -> None:
    script = {"c000@1": "Heat (1995) or Fargo (1996)?", "c000@3": "Then Alien (1979)!"}
    seeds = [Seed("a", "Likes crime.", {"genres": ["Crime"]}, "m3"),
             Seed("b", "Likes crime.", {"genres": ["Crime"]}, "m4")]
    convs = [Conversation("c000", 0, seeds[0]), Conversation("c001", 1, seeds[1])]
    script |= {"c001@1": "Heat (1995)."}
    run(make_clients(replies=scripted(script)), convs, max_in_flight=1, max_turns=4)
    assert convs[0].recommended_item_ids == ["m1", "m3", "m5"]
    assert convs[0].target_rank == 2
    assert convs[1].recommended_item_ids == ["m1"]
    assert convs[1].target_rank is None
