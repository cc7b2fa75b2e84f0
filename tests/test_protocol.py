"""The two protocols end to end on the fake engine: what each role is shown, how acceptance is decided, and that
a reference-free run's prompts carry nothing of the target."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import make_catalog, make_seeds
from fake_engine import EngineLog, FakeClient, fake_open_engines
from interplay.common.attributes import missing
from interplay.common.roles import PROTOCOL_ACCEPT_NOTE
from interplay.generator.config import ConfigError, GenerateConfig
from interplay.generator.dialogue.conversation import Completion, Conversation, Outcome
from interplay.generator.dialogue.parsing import ReplyParser
from interplay.generator.dialogue import teacher
from interplay.generator.dialogue.prompts import format_attributes
from interplay.generator.dialogue.protocol import DialogueProtocol
from interplay.generator.inputs.seeds import NO_TARGET, Seed, write_seeds
from interplay.generator.inputs.shortlist import Shortlist
from interplay.generator.runtime.run import Generation


class RecordingClient(FakeClient):
    """A fake client that keeps every prompt it rendered, by request id."""

    def __init__(self, role: str, prompts: dict[str, list[dict[str, str]]], **kw: Any):
        super().__init__(role, **kw)
        self.prompts, self._last = prompts, None

    def render(self, messages, cache=None):
        self._last = messages
        return super().render(messages, cache)

    async def generate(self, request_id, prompt_token_ids, seed, **kw):
        self.prompts[request_id] = self._last  # render and generate run back to back for one request
        return await super().generate(request_id, prompt_token_ids, seed, **kw)


def run(config: GenerateConfig, out: Path, **replies: Any) -> tuple[list[dict], dict[str, list[dict[str, str]]]]:
    prompts: dict[str, list[dict[str, str]]] = {}
    log = EngineLog()
    clients = {role: RecordingClient(role, prompts, log=log, **({"replies": replies[role]} if role in replies else {}))
               for role in ("user", "recommender")}
    asyncio.run(Generation(config, out).run(fake_open_engines(clients)))
    rows = [r for p in sorted(out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    return rows, prompts


def text_of(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)


# ---------------------------------------------------------------------------------- reference-free: no target


@pytest.mark.parametrize("k", [0, 3])
def test_reference_free_prompts_hold_nothing_of_the_target(tmp_path: Path, make_config, k: int) -> None:
    """Every prompt of a reference-free run, with and without retrieved candidates, is the same whether or not the
    seeds name a target; and no user-simulator prompt holds the target's title or id."""
    seeds = make_seeds(20)
    without = write_seeds(tmp_path / "no-target.parquet", [replace(s, target_item_id=None) for s in seeds])
    catalog = make_catalog()
    with_target = run(make_config(recommender={"num_candidates": k}), tmp_path / "a")
    without_target = run(make_config(recommender={"num_candidates": k}, seeds_path=without), tmp_path / "b")
    assert with_target[1] == without_target[1]
    assert len(with_target[1]) > 40
    targets = {s.seed_id: s.target_item_id for s in seeds if s.target_item_id}
    for request_id, messages in with_target[1].items():
        seed_id = request_id.split("@")[0].split("#")[0]
        if seed_id not in targets:
            continue
        system = messages[0]["content"]  # what the seed contributes; the rest is what the other role said
        assert catalog.get(targets[seed_id]).title not in system and targets[seed_id] not in system
    rows = with_target[0]
    assert {r["protocol"] for r in rows} == {"reference_free"}
    shown = [t["candidate_item_ids"] for r in rows for t in r["turns"] if t["role"] == "recommender"]
    assert all(len(c) == k for c in shown) and shown
    assert all(not t["candidate_item_ids"] for r in rows for t in r["turns"] if t["role"] == "user")


def test_candidates_come_from_what_the_user_said(tmp_path: Path, make_config) -> None:
    user = lambda rid, seed: "Something funny from the nineties, please."  # noqa: E731
    rows, prompts = run(make_config(recommender={"num_candidates": 2}, num_dialogues=3), tmp_path / "out",
                        user=user)
    first = rows[0]["turns"][1]["candidate_item_ids"]
    # 1990s comedies; BM25 favours the shorter documents, and the tie goes to the earlier (more popular) item.
    assert first == ["m3", "m7"]
    rec_prompt = prompts[f"{rows[0]['conversation_id']}@1"]
    assert rec_prompt[1]["content"].endswith("[catalog: Fargo (1996) | Groundhog Day (1993)]")
    assert "pick the one that fits best" in rec_prompt[0]["content"]


def test_candidate_notes_stay_in_the_history(tmp_path: Path, make_config) -> None:
    rows, prompts = run(make_config(recommender={"num_candidates": 2}, num_dialogues=4,
                                    conversation={"max_turns": 8}), tmp_path / "out")
    for row in rows:
        rec_turns = [i for i, t in enumerate(row["turns"]) if t["role"] == "recommender"]
        for a, b in zip(rec_turns, rec_turns[1:]):
            earlier = prompts[f"{row['conversation_id']}@{a}"]
            later = prompts[f"{row['conversation_id']}@{b}"]
            assert later[:len(earlier)] == earlier  # append-only: the prefix cache keeps serving it


# ------------------------------------------------------------------------------------------ the teacher


def accept_only_target(config: GenerateConfig) -> dict[str, Any]:
    """Replies for a reference run: the recommender names the shortlist's items one per turn, in order; the user
    writes the marker every time (so the protocol has to ignore it after a wrong suggestion)."""
    catalog = make_catalog()
    shortlist = Shortlist(catalog, config.num_candidates, config.seed, (config.conversation.max_turns - 1) // 2)

    def recommender(request_id: str, seed: int) -> str:
        cid, turn = request_id.rsplit("@", 1)
        seed_row = next(s for s in make_seeds(20) if s.seed_id == cid.split("#")[0])
        items = shortlist.for_conversation(cid, seed_row.target_item_id, seed_row.target_attributes)
        return f" {catalog.get(items[int(turn) // 2]).display}?"  # continues the opener

    return {"recommender": recommender, "user": lambda rid, seed: "Sounds good. [ACCEPT]"}


def test_reference_accepts_exactly_when_the_target_is_suggested(tmp_path: Path, make_config) -> None:
    config = make_config(protocol="reference", conversation={"max_turns": 10})
    rows, prompts = run(config, tmp_path / "out", **accept_only_target(config))
    assert rows and {r["protocol"] for r in rows} == {"reference"}
    accepted = [r for r in rows if r["outcome"] == "accepted"]
    assert all(r["accepted_item_id"] == r["target_item_id"] for r in accepted)
    # The target drawn last comes after every distractor: those dialogues reject every suggestion until max_turns
    # (at 10 turns the fifth suggestion, the last turn, is the target, with no user turn left to accept it).
    assert {r["outcome"] for r in rows} == {"accepted", "max_turns"}
    assert all(r["target_rank"] in (None, 5) for r in rows if r["outcome"] == "max_turns")
    for row in accepted:
        turns = row["turns"]
        rank = next(i for i, t in enumerate(turns) if t["role"] == "recommender" and row["target_item_id"] in t["item_ids"])
        assert len(turns) == rank + 2  # the user's next turn accepts
        ignored = [t["note"] for t in turns[:-1] if t["role"] == "user" and t["note"]]
        assert all(n.endswith("the target was not just suggested: ignored") for n in ignored)
        assert len(ignored) == rank // 2 + 1  # the opening turn's marker too
        shown = [t["candidate_item_ids"] for t in turns if t["role"] == "recommender"]
        assert len(shown[0]) == 5 and row["target_item_id"] in shown[0]
        for earlier, later in zip(shown, shown[1:]):  # what was suggested leaves the shortlist
            assert set(later) < set(earlier)
    ranks = [r["target_rank"] for r in accepted]
    assert set(ranks) <= {1, 2, 3} and len(set(ranks)) > 1  # the target is not always suggested first


def test_reference_replies_are_started_with_an_opener(tmp_path: Path, make_config) -> None:
    config = make_config(protocol="reference", conversation={"max_turns": 10})
    rows, prompts = run(config, tmp_path / "out", **accept_only_target(config))
    openers = ("How about", "You might like", "I would suggest", "Have you seen", "Try")
    for row in rows:
        for i, turn in enumerate(row["turns"]):
            if turn["role"] == "recommender":
                prompt = prompts[f"{row['conversation_id']}@{i}"]
                assert prompt[-1]["role"] == "assistant" and prompt[-1]["content"] in openers
                assert turn["text"] == prompt[-1]["content"] + turn["raw_text"][len(prompt[-1]["content"]):]
                assert turn["text"].startswith(prompt[-1]["content"] + " ")
    free = run(make_config(recommender={"num_candidates": 2}, num_dialogues=3), tmp_path / "free")[1]
    assert all(p[-1]["role"] != "assistant" for p in free.values())  # reference-free: no opener by default


def test_reference_records_the_accept_when_the_simulator_forgets_the_marker(tmp_path: Path, make_config) -> None:
    config = make_config(protocol="reference", conversation={"max_turns": 10})
    replies = {**accept_only_target(config), "user": lambda rid, seed: "Hmm, maybe."}
    rows, _ = run(config, tmp_path / "out", **replies)
    accepted = [r for r in rows if r["outcome"] == "accepted"]
    assert accepted and all(r["turns"][-1]["note"] == PROTOCOL_ACCEPT_NOTE for r in accepted)


def test_reference_user_reads_a_note_after_each_suggestion(tmp_path: Path, make_config) -> None:
    config = make_config(protocol="reference", conversation={"max_turns": 10})
    rows, prompts = run(config, tmp_path / "out", **accept_only_target(config))
    catalog = make_catalog()
    row = next(r for r in rows if r["num_turns"] >= 4)
    target = catalog.get(row["target_item_id"]).display
    user_prompt = prompts[f"{row['conversation_id']}@{row['num_turns'] - 1}"]
    assert target not in user_prompt[0]["content"]  # the built-in prompt keeps the title from the simulator
    notes = [m["content"] for m in user_prompt[3::2]]  # the recommender's messages, in the simulator's view
    assert notes[-1].endswith(f"(This is {target}, the movie you were hoping for: take it.)")
    # Each rejection note names what the suggestion lacks (no item of the test catalog has a decade).
    wanted = {a["name"]: a["values"] for a in row["target_attributes"]}
    suggested = [t["item_ids"][0] for t in row["turns"] if t["role"] == "recommender"]
    assert len(notes) == len(suggested) >= 2
    for note, item_id in zip(notes[:-1], suggested):
        lacking = format_attributes(missing(catalog.get(item_id).attributes, wanted))
        assert "decade" in lacking and note.endswith(f"(Not the movie you are hoping for. It lacks what you want: "
                                                     f"{lacking}. Say so.)")
    stored = [t["text"] for t in row["turns"] if t["role"] == "recommender"]
    assert all("hoping for" not in text for text in stored)  # the notes are never part of the corpus


def test_reference_accepts_within_max_turns(tmp_path: Path, make_config) -> None:
    for max_turns in (4, 5, 6):  # room for one, two and two suggestions before the user's last turn
        config = make_config(protocol="reference", conversation={"max_turns": max_turns})
        rows, _ = run(config, tmp_path / f"out{max_turns}", **accept_only_target(config))
        accepted = [r for r in rows if r["outcome"] == "accepted"]
        assert {r["target_rank"] for r in accepted} == set(range(1, (max_turns - 1) // 2 + 1))
        assert all(r["target_rank"] is None for r in rows if r not in accepted)


def test_reference_skips_seeds_without_target(tmp_path: Path, make_config) -> None:
    generation = Generation(make_config(protocol="reference"), tmp_path / "out")
    assert generation.scan.skipped == {NO_TARGET: 5}  # make_seeds: every 4th seed has no target
    assert generation.scan.num_valid == 15


def test_shortlist_distractors_share_a_value_but_do_not_fit() -> None:
    catalog = make_catalog()
    shortlist = Shortlist(catalog, 3, run_seed=0)
    wanted = {"genres": ["Crime"]}
    # Fargo is a crime comedy: the comedies that are no crime films share a value and do not fit.
    items = shortlist.for_conversation("c1", "m3", wanted)
    assert items == shortlist.for_conversation("c1", "m3", wanted) and set(items) == {"m3", "m2", "m7"}
    # Pulp Fiction is only "Crime", and every crime film fits: the most popular items that do not fit fill in.
    assert set(shortlist.for_conversation("c1", "m6", wanted)) == {"m6", "m2", "m4"}
    positions = [shortlist.for_conversation(f"c{i}", "m3", wanted).index("m3") for i in range(40)]
    assert set(positions) == {0, 1, 2}  # the target is suggested first, second or third
    # Room for one suggestion: the target first, unless it was drawn last (never reached).
    short = Shortlist(catalog, 3, run_seed=0, max_suggestions=1)
    assert {short.for_conversation(f"c{i}", "m3", wanted).index("m3") for i in range(40)} == {0, 2}


def test_accept_marker_ignored_outside_the_target_under_reference() -> None:
    catalog = make_catalog()
    conv = Conversation("c", 0, Seed("c", "likes crime", {"genres": ["Crime"]}, "m1"))
    parser = ReplyParser()
    for text in ("Hi", "Try Fargo (1996).", "Love it [ACCEPT]", "Then Heat (1995)?", "Fine."):
        conv.add_reply(Completion(text, 1, 1, 0, "stop"), parser, catalog, 10, reference=True)
    assert conv.outcome is Outcome.ACCEPTED and conv.accepted_item_id == "m1"
    assert conv.turns[2].note.endswith("ignored")


# ------------------------------------------------------------------------------------------ bad input


def test_more_candidates_than_catalog_items_is_refused(tmp_path: Path, make_config) -> None:
    with pytest.raises(ConfigError, match="more than the catalog's 7 items"):
        Generation(make_config(recommender={"num_candidates": 8}), tmp_path / "out")


def test_candidates_need_attributes_to_match_on(tmp_path: Path, make_config) -> None:
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({"item_id": f"i{i}", "title": f"Title {i}"}) + "\n" for i in range(5)))
    seeds = write_seeds(tmp_path / "s.parquet", [Seed("s", "likes films", {"genres": ["Drama"]}, None)])
    config = make_config(recommender={"num_candidates": 2}, seeds_path=seeds)
    config = config.model_copy(update={"seeds": config.seeds.model_copy(update={"catalog": str(bare)})})
    with pytest.raises(ConfigError, match="no years or attributes"):
        Generation(config, tmp_path / "out")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"recommender": {"num_candidates": -1}}, "greater than or equal to 0"),
    ({"protocol": "reference", "recommender": {"num_candidates": 0}}, "needs at least 1"),
    ({"protocol": "teacher"}, "reference_free"),
    ({"user": {"system_prompt": "I want {target}."}}, "only for protocol: reference"),
    ({"user": {"num_candidates": 3}}, "num_candidates"),
])
def test_protocol_settings_are_checked(make_config, overrides: dict, message: str) -> None:
    with pytest.raises(Exception, match=message):
        make_config(**overrides)


def test_protocol_and_candidates_enter_the_config_hash(make_config) -> None:
    hashes = {make_config().hash(), make_config(protocol="reference").hash(),
              make_config(recommender={"num_candidates": 5}).hash()}
    assert len(hashes) == 3


def test_protocol_messages_need_no_engine() -> None:
    """The protocol is plain Python: render a reference conversation's views without any engine."""
    config = GenerateConfig.model_validate({"engine": {"model": "org/model"}, "protocol": "reference"})
    protocol = DialogueProtocol(config, make_catalog())
    conv = Conversation("c", 0, Seed("c", "likes crime", {"genres": ["Crime"], "decade": ["1990s"]}, "m6"))
    assert "Pulp Fiction" not in protocol.messages(conv, "user")[0]["content"]
    custom = config.model_copy(update={"user": config.user.model_copy(update={"system_prompt": "Find {target}."})})
    assert DialogueProtocol(custom, make_catalog()).messages(conv, "user")[0]["content"] == "Find Pulp Fiction (1994)."
    conv.add_reply(Completion("Something with gangsters.", 1, 1, 0, "stop"), ReplyParser(), make_catalog(), 10,
                   reference=True)
    rec = protocol.messages(conv, "recommender")
    assert rec[-1]["role"] == "assistant" and rec[-1]["content"] == conv.pending_opener  # a started reply
    assert "Pulp Fiction (1994)" in rec[-2]["content"] and conv.pending_candidates
    assert "Pulp Fiction" not in rec[0]["content"]  # the system prompt names no item


def test_training_recomputes_the_candidates_generation_showed(tmp_path: Path, make_config) -> None:
    """Training renders a served-with-candidates recommender's view from the stored text alone: the lists it
    recomputes are the ones generation showed, turn for turn."""
    from interplay.generator.dialogue.protocol import RetrievedCandidates

    rows, prompts = run(make_config(recommender={"num_candidates": 3}, conversation={"max_turns": 8}),
                        tmp_path / "out")
    retrieved = RetrievedCandidates(make_catalog(), 3)
    for row in rows:
        history = [(t["role"], t["text"]) for t in row["turns"]]
        shown = [t["candidate_item_ids"] for t in row["turns"] if t["role"] == "recommender"]
        assert retrieved.shown(history)[:len(shown)] == shown
        if shown:
            last_rec = max(i for i, t in enumerate(row["turns"]) if t["role"] == "recommender")
            served = prompts[f"{row['conversation_id']}@{last_rec}"]
            view = retrieved.view(history[:last_rec])
            assert [m["content"] for m in served[1:]] == [text for _, text in view]


def test_teacher_replies_are_constrained_to_name_one_candidate(tmp_path: Path, make_config) -> None:
    import re

    config = make_config(protocol="reference", conversation={"max_turns": 10})
    prompts: dict = {}
    log = EngineLog()
    replies = accept_only_target(config)
    clients = {role: RecordingClient(role, prompts, log=log, replies=replies[role]) for role in ("user", "recommender")}
    asyncio.run(Generation(config, tmp_path / "out").run(fake_open_engines(clients)))
    rec_calls = [c for c in log.calls if c.role == "recommender"]
    assert rec_calls and all(c.regex for c in rec_calls)
    for call in rec_calls:  # the fake's reply names the next shortlisted item: it must match, others must not
        assert re.fullmatch(call.regex, call.text)
        assert not re.fullmatch(call.regex, " The Godfather (1972)? A classic.")
        assert not re.fullmatch(call.regex, call.text + " Or Heat (1995).")  # one item per turn
    free = EngineLog()
    clients = {role: RecordingClient(role, {}, log=free) for role in ("user", "recommender")}
    asyncio.run(Generation(make_config(recommender={"num_candidates": 3}), tmp_path / "free").run(
        fake_open_engines(clients)))
    assert all(c.regex is None for c in free.calls)  # reference-free: unconstrained unless asked


def test_teacher_user_replies_must_say_what_the_protocol_asks(make_config) -> None:
    import re

    config = make_config(protocol="reference", conversation={"max_turns": 10})
    protocol = DialogueProtocol(config, make_catalog())
    # No item of the test catalog has a decade, so a wanted decade would be missing from every suggestion.
    seed = Seed("c", "likes crime", {"genres": ["Crime", "Drama"]}, "m1")
    conv, parser = Conversation("c", 0, seed), ReplyParser()

    def regex_after(*texts: str) -> str | None:
        conv.turns.clear()
        for text in texts:
            conv.add_reply(Completion(text, 1, 1, 0, "stop"), parser, protocol.catalog, 10, reference=True)
        protocol.messages(conv, "user")
        return conv.pending_regex

    opening = regex_after()
    assert re.fullmatch(opening, " I love heists.") and re.fullmatch(opening, "")
    assert conv.pending_opener in [t.format(wanted=w) for t in teacher.OPENING_TEMPLATES
                                   for w in ("a crime movie", "a drama movie")]
    reject = regex_after("A crime film.", "Try Toy Story (1995).")  # no Crime, no Drama
    assert conv.pending_opener in [t.format(wanted=w) for t in teacher.REJECTION_TEMPLATES
                                   for w in ("a crime movie", "a drama movie")]
    assert not re.fullmatch(reject, " Fine [ACCEPT]")  # no marker after a suggestion that is not the target
    accept = regex_after("A crime film.", "Try Heat (1995).")
    assert conv.pending_opener == ""
    assert re.fullmatch(accept, "[ACCEPT] Great, I will watch it.") and not re.fullmatch(accept, "Great!")
    assert not re.fullmatch(accept, "Great, I will watch it. [ACCEPT]")  # the decision comes first
    conv.add_reply(Completion("[ACCEPT] Great. Thanks!", 1, 1, 0, "stop"), parser, protocol.catalog, 10,
                   reference=True)
    assert conv.outcome is Outcome.ACCEPTED and conv.turns[-1].note is None  # written, not recorded
    free, conv = DialogueProtocol(make_config(), make_catalog()), Conversation("c", 0, seed)
    free.messages(conv, "user")
    assert conv.pending_regex is None  # reference-free replies are never constrained
    with pytest.raises(ValueError, match="only for protocol: reference"):
        make_config(user={"constrain_replies": True})


def test_naming_one_of_escapes_titles() -> None:
    import re

    from interplay.generator.dialogue.protocol import naming_one_of

    names = ["Dr. Strangelove or: How I Learned to Stop Worrying (1964)", "Se7en [Director's Cut] (1995)", "+1 (2013)"]
    after_opener = naming_one_of(names, "How about")
    assert re.fullmatch(after_opener, " Dr. Strangelove or: How I Learned to Stop Worrying (1964)? Dark and funny.")
    assert re.fullmatch(after_opener, " +1 (2013), a party gone wrong.")
    assert not re.fullmatch(after_opener, " Dr X Strangelove or: How I Learned to Stop Worrying (1964)")
    assert not re.fullmatch(after_opener, " +1 (2013)\n[catalog: ...]")
    assert re.fullmatch(naming_one_of(names), "You could watch +1 (2013) tonight.")
