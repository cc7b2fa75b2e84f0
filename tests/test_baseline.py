"""The single-LLM baseline: splitting one generated text into turns, and whole runs with the fake engine (through
the same scheduler as an Interplay run)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import make_catalog, make_seeds
from fake_engine import EngineLog, fake_open_engines, make_clients
from interplay.generator.dialogue.conversation import Completion, Conversation, turn_seed
from interplay.generator.dialogue.parsing import ReplyParser
from interplay.generator.output.records import SCHEMA
from interplay.generator.runtime.baseline import (
    MODE,
    BaselineGeneration,
    apply_dialogue,
    baseline_messages,
    config_hash,
    single_llm_config,
    split_dialogue,
)
from interplay.generator.runtime.run import Generation
from interplay.generator.runtime.scheduler import Scheduler

DIALOGUE = """Sure! Here is the conversation:
User: Hi, I want a tense crime film from the nineties.
Recommender: You might like Fargo (1996).
It is dark and funny.
**User:** Seen it. Anything else?
Recommender: Then try Heat (1995), a tense crime classic.
User: Heat sounds perfect, I pick it! [ACCEPT]
Recommender: Enjoy!"""


def conversation(target: str | None = "m1") -> Conversation:
    seed = make_seeds(2)[1]
    return Conversation("c0", 0, type(seed)(seed.seed_id, seed.preference_summary, seed.target_attributes, target))


def test_split_dialogue_labels_continuations_and_preamble() -> None:
    turns, notes = split_dialogue(DIALOGUE)
    assert turns == [
        ("user", "Hi, I want a tense crime film from the nineties."),
        ("recommender", "You might like Fargo (1996).\nIt is dark and funny."),
        ("user", "Seen it. Anything else?"),
        ("recommender", "Then try Heat (1995), a tense crime classic."),
        ("user", "Heat sounds perfect, I pick it! [ACCEPT]"),
        ("recommender", "Enjoy!"),
    ]
    assert notes == ["text before the first speaker label dropped"]


def test_split_dialogue_merges_a_speaker_and_drops_a_leading_recommender() -> None:
    turns, notes = split_dialogue("Assistant: Hello!\nUser: hi\nUser:\nSeeker: something funny\nBot: Fargo (1996)")
    assert turns == [("user", "hi\nsomething funny"), ("recommender", "Fargo (1996)")]
    assert "leading recommender turn dropped" in notes
    text = 'The user: "I want a comedy."\nThe Recommender: “Try Fargo (1996).”\nUser: "Fine" then'
    turns, _ = split_dialogue(text)
    assert turns == [("user", "I want a comedy."), ("recommender", "Try Fargo (1996)."), ("user", '"Fine" then')]
    assert split_dialogue("no labels at all") == ([], ["text before the first speaker label dropped"])


def test_apply_dialogue_outcome_grounding_and_token_counts() -> None:
    conv = conversation("m1")
    completion = Completion(DIALOGUE, 120, 90, 40, "stop")
    apply_dialogue(conv, completion, ReplyParser(), make_catalog(), max_turns=8)
    assert conv.outcome.value == "accepted"
    assert [t.role for t in conv.turns] == ["user", "recommender", "user", "recommender", "user"]
    assert conv.turns[-1].text == "Heat sounds perfect, I pick it!"  # marker stripped, "Enjoy!" after the end
    assert conv.recommended_item_ids == ["m3", "m1"] and conv.accepted_item_id == "m1" and conv.target_rank == 2
    assert [(t.num_prompt_tokens, t.num_output_tokens, t.num_cached_tokens) for t in conv.turns] == \
        [(120, 90, 40)] + [(0, 0, 0)] * 4
    assert conv.turns[0].raw_text == DIALOGUE
    assert "1 turn(s) after the end dropped" in conv.turns[0].note and MODE in conv.turns[0].note


def test_apply_dialogue_without_an_ending_or_without_labels_is_a_bad_reply() -> None:
    conv = conversation()
    apply_dialogue(conv, Completion("User: hi\nRecommender: Fargo (1996)?", 10, 9, 0, "length"), ReplyParser(),
                   make_catalog(), max_turns=8)
    assert conv.outcome.value == "bad_reply" and len(conv.turns) == 2
    assert "without the user accepting" in conv.error and "max_tokens" in conv.error
    conv = conversation()
    apply_dialogue(conv, Completion("I cannot write that.", 10, 5, 0, "stop"), ReplyParser(), make_catalog(), 8)
    assert conv.outcome.value == "bad_reply" and len(conv.turns) == 1
    assert conv.turns[0].raw_text == "I cannot write that." and conv.turns[0].text == ""
    conv = conversation()
    long = "\n".join(f"User: {i}\nRecommender: Fargo (1996)" for i in range(6))
    apply_dialogue(conv, Completion(long, 10, 5, 0, "stop"), ReplyParser(), make_catalog(), 4)
    assert conv.outcome.value == "max_turns" and len(conv.turns) == 4


def test_prompt_names_the_target_and_config_is_one_shared_engine(make_config) -> None:
    config = make_config(topology="separate", user={"engine": {"max_num_seqs": 8}},
                         recommender={"engine": {"max_num_seqs": 16}, "sampling": {"max_tokens": 50}},
                         conversation={"max_turns": 5})
    llm = single_llm_config(config)
    assert llm.topology == "shared" and llm.engine["max_num_seqs"] == 16
    assert llm.sampling("recommender")["max_tokens"] == 3 * 64 + 2 * 50  # a whole dialogue's budget
    assert config_hash(config) != config.hash()
    messages = baseline_messages(conversation("m1"), config, make_catalog())
    assert "Heat (1995)" in messages[1]["content"] and "genres: Comedy" in messages[1]["content"]
    assert "Heat" not in baseline_messages(conversation(None), config, make_catalog())[1]["content"]


def replies(request_id: str, seed: int) -> str:
    """A single-LLM text per conversation; some end without an ending, one has no label at all."""
    k = seed % 4
    if k == 0:
        return DIALOGUE
    if k == 1:
        return "User: something funny please\nRecommender: Groundhog Day (1993)!\nUser: no thanks, bye [QUIT]"
    if k == 2:
        return "User: hello\nRecommender: Alien (1979)?"
    return "nothing"


def test_baseline_run_same_schema_plan_and_mode(tmp_path: Path, make_config) -> None:
    config = make_config(num_dialogues=12, dialogues_per_shard=5, max_in_flight=3)
    log = EngineLog()
    engines = fake_open_engines(make_clients(log, replies=replies))
    out = tmp_path / "baseline"
    manifest = asyncio.run(BaselineGeneration(config, out).run(engines))
    assert manifest["mode"] == MODE and manifest["status"] == "complete"
    assert manifest["totals"]["num_dialogues"] == 12
    assert engines.configs[0].topology == "shared"
    assert {c.role for c in log.calls} == {"recommender"} and len(log.calls) == 12  # one request each
    rows = [r for p in sorted(out.glob("shard-*.parquet")) for r in pq.read_table(p).to_pylist()]
    for p in out.glob("shard-*.parquet"):
        assert pq.read_schema(p).equals(SCHEMA, check_metadata=False)
    assert sorted(r["conversation_index"] for r in rows) == list(range(12))
    assert {r["user_model"] for r in rows} == {f"{MODE}:fake/recommender-model"}
    assert json.loads(rows[0]["user_sampling"])["max_tokens"] == 6 * 64
    outcomes = {r["outcome"] for r in rows}
    assert outcomes <= {"accepted", "gave_up", "bad_reply"} and len(outcomes) >= 2
    # The same seeds, in the same order, as an Interplay run of the same config.
    interplay_out = tmp_path / "interplay"
    asyncio.run(Generation(config, interplay_out).run(fake_open_engines(make_clients())))
    other = {r["conversation_index"]: r["seed_id"]
             for p in interplay_out.glob("shard-*.parquet") for r in pq.read_table(p).to_pylist()}
    assert {r["conversation_index"]: r["seed_id"] for r in rows} == other
    # Rerunning completes nothing new; an Interplay run into the baseline directory is refused.
    again = asyncio.run(BaselineGeneration(config, out).run(engines))
    assert again["totals"]["num_dialogues"] == 12 and len(log.calls) == 12
    try:
        Generation(config, out)
    except Exception as e:
        assert "different config" in str(e)
    else:
        raise AssertionError("an Interplay run must not resume a baseline directory")


def test_baseline_runs_through_the_scheduler(tmp_path: Path, make_config) -> None:
    config = make_config(num_dialogues=12, max_in_flight=3, seed=5, sampling_seeds="per_turn")
    log = EngineLog()
    generation = BaselineGeneration(config, tmp_path / "baseline")
    progress = io.StringIO()
    manifest = asyncio.run(generation.run(fake_open_engines(make_clients(log, replies=replies)), progress=progress))
    stats = generation.scheduler.stats
    assert isinstance(generation.scheduler, Scheduler)
    # The scheduler counted the baseline's requests (one per dialogue), tokens, outcomes and in-flight bound.
    assert (stats.num_finished, stats.num_turns, stats.num_in_flight) == (12, 12, 0)
    assert stats.max_in_flight_seen == 3 == log.max_in_flight
    assert stats.num_output_tokens == manifest["totals"]["tokens"]["user"]["output"] == generation.num_output_tokens
    assert stats.num_output_tokens > 0 and "tok_s=" in progress.getvalue()
    assert stats.by_outcome == manifest["totals"]["outcomes"]
    # Request 0 of each conversation, with the per-turn seed of turn 0.
    assert all(c.request_id == f"{c.conversation_id}@0" for c in log.calls)
    assert all(c.seed == turn_seed(5, c.conversation_id, 0) for c in log.calls)
    assert {c.regex for c in log.calls} == {None}


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs the main thread")
def test_baseline_first_ctrl_c_stops_the_scheduler_and_finishes_active_dialogues(tmp_path: Path,
                                                                                 make_config) -> None:
    config = make_config(num_dialogues=20, max_in_flight=4, dialogues_per_shard=3)
    out = tmp_path / "baseline"
    log = EngineLog()
    sent = {"n": 0}

    def on_submit(request_id: str) -> None:
        sent["n"] += 1
        if sent["n"] == 6:
            os.kill(os.getpid(), signal.SIGINT)

    generation = BaselineGeneration(config, out)
    manifest = asyncio.run(generation.run(fake_open_engines(make_clients(log, replies=replies,
                                                                         on_submit=on_submit))))
    assert generation.scheduler.is_stopping  # what `interplay generate` reports as "interrupted"
    assert manifest["status"] == "running"
    records = [r for p in out.glob("shard-*.parquet") for r in pq.read_table(p).to_pylist()]
    # Every dialogue begun was run to its end and written; none was cut short, and the run stopped early.
    assert 6 <= len(records) < 20 and all(c.result == "ok" for c in log.calls)
    assert sorted(r["conversation_id"] for r in records) == sorted(log.conversation_ids())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    manifest = asyncio.run(BaselineGeneration(config, out).run(fake_open_engines(make_clients(replies=replies))))
    assert manifest["status"] == "complete" and manifest["totals"]["num_dialogues"] == 20


def test_baseline_sends_no_seed_under_sampling_seeds_none(tmp_path: Path, make_config) -> None:
    log = EngineLog()
    config = make_config(num_dialogues=4, sampling_seeds="none")
    asyncio.run(BaselineGeneration(config, tmp_path / "b").run(fake_open_engines(make_clients(log, replies=replies))))
    assert len(log.calls) == 4 and {c.seed for c in log.calls} == {None}
