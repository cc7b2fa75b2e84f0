"""Generation end to end: the fake engine, the real scheduler, writer and manifest, in tmp_path."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import logged, make_catalog, make_seeds
from fake_engine import EngineLog, fake_open_engines, make_clients
from interplay.common.roles import ROLES
from interplay.generator.config import GenerateConfig
from interplay.generator.dialogue.conversation import turn_seed
from interplay.generator.inputs.seeds import write_seeds
from interplay.generator.output.records import SCHEMA
from interplay.generator.output.writer import OutputError
from interplay.generator.runtime.identity import file_digest, identity_hash
from interplay.generator.runtime.run import Generation, prompt_messages
from interplay.generator.runtime.scheduler import EngineDead

SHARD = re.compile(r"^shard-\d{5}\.parquet$")


def generate(config: GenerateConfig, out: Path, log: EngineLog | None = None, *, overwrite: bool = False,
             **client_kw: Any) -> tuple[dict[str, Any], EngineLog, fake_open_engines]:
    log = log if log is not None else EngineLog()
    engines = fake_open_engines(make_clients(log, **client_kw))
    manifest = asyncio.run(Generation(config, out, overwrite=overwrite).run(engines))
    return manifest, log, engines


def shards(out: Path) -> list[Path]:
    return sorted(out.glob("*.parquet"))


def rows(out: Path) -> list[dict[str, Any]]:
    return [r for path in shards(out) for r in pq.read_table(path).to_pylist()]


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["conversation_id"]: r for r in records}


def file_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in shards(out)}


# ------------------------------------------------------------------------------------------ the corpus


def test_corpus_shards_schema_and_manifest(tmp_path: Path, make_config) -> None:
    import pandas as pd

    config = make_config(num_dialogues=23, dialogues_per_shard=5, max_in_flight=4)
    out = tmp_path / "out"
    manifest, log, engines = generate(config, out)

    assert (engines.opened, engines.closed) == (1, 1)
    assert [p.name for p in shards(out)] == [f"shard-{i:05d}.parquet" for i in range(5)]
    tables = [pq.read_table(p) for p in shards(out)]
    for table in tables:
        assert table.schema.equals(SCHEMA, check_metadata=False)
    assert [t.num_rows for t in tables] == [5, 5, 5, 5, 3]
    records = rows(out)
    assert sorted(r["conversation_index"] for r in records) == list(range(23))

    frame = pd.concat([pd.read_parquet(p) for p in shards(out)], ignore_index=True)
    assert len(frame) == 23
    assert list(frame.columns) == SCHEMA.names
    assert sorted(frame["conversation_index"].tolist()) == list(range(23))
    assert frame["conversation_id"].is_unique

    # Rows against the seeds and the engine.
    seeds = make_seeds(20)
    for r in records:
        seed = seeds[r["conversation_index"] % 20]
        assert r["seed_id"] == seed.seed_id
        assert r["conversation_id"] == (seed.seed_id if r["conversation_index"] < 20 else seed.seed_id + "#1")
        assert r["target_item_id"] == seed.target_item_id
        assert r["preference_summary"] == seed.preference_summary
        assert r["num_turns"] == len(r["turns"]) == len(r["messages"]) >= 1
        assert [m["content"] for m in r["messages"]] == [t["text"] for t in r["turns"]]
        assert r["user_model"] == "fake/user-model" and r["recommender_model"] == "fake/recommender-model"
        for role in ROLES:
            assert json.loads(r[f"{role}_sampling"]) == config.sampling(role)
            assert r[f"{role}_adapter"] is None
        assert r["target_recommended"] == (r["target_rank"] is not None)
        assert r["outcome"] in {"accepted", "gave_up", "max_turns"}
        assert (r["accepted_item_id"] is not None) == (r["outcome"] == "accepted")
    assert len(log.conversation_ids()) == 23
    assert log.max_in_flight_conversations <= 4 and log.overlaps == []

    # The manifest: complete, totals equal to what the rows hold.
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["identity"]["config"] == config.hash()
    assert manifest["config_hash"] == identity_hash(manifest["identity"])
    assert manifest["config"] == config.model_dump(mode="json")
    assert manifest["num_dialogues"] == 23
    totals = manifest["totals"]
    assert totals["num_dialogues"] == 23
    assert totals["outcomes"] == dict(Counter(r["outcome"] for r in records))
    for role in ROLES:
        turns = [t for r in records for t in r["turns"] if t["role"] == role]
        assert totals["tokens"][role] == {"prompt": sum(t["num_prompt_tokens"] for t in turns),
                                          "output": sum(t["num_output_tokens"] for t in turns),
                                          "cached": sum(t["num_cached_tokens"] for t in turns)}
        assert totals["tokens"][role]["output"] > 0
    log = logged(out)
    assert [s["file"] for s in log] == [p.name for p in shards(out)]
    assert [s["num_rows"] for s in log] == [5, 5, 5, 5, 3]
    assert [s["indices"] for s in log] == [sorted(pq.read_table(p).column("conversation_index").to_pylist())
                                           for p in shards(out)]
    assert (manifest["shard_log"], manifest["num_shards"]) == ("shards.jsonl", 5)
    assert len(manifest["runs"]) == 1 and manifest["runs"][0]["num_dialogues"] == 23
    assert manifest["seeds"] == {"path": str(config.seeds.path), "sha256": file_digest(config.seeds.path),
                                 "num_rows": 20, "num_valid": 20, "skipped": {}}
    assert manifest["versions"]["interplay"] == manifest["identity"]["interplay"]
    assert manifest["runs"][0]["runtime"] == config.runtime_settings()


def test_corpus_loads_with_datasets(tmp_path: Path, make_config, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    out = tmp_path / "out"
    generate(make_config(num_dialogues=12, dialogues_per_shard=5), out)
    ds = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 12
    assert sorted(ds["conversation_index"]) == list(range(12))
    for row in ds:
        msgs = row["messages"]
        assert msgs and all(set(m) == {"role", "content"} for m in msgs)
        assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(msgs) // 2) + ["user"] * (len(msgs) % 2)
        assert all(isinstance(m["content"], str) and m["content"] for m in msgs)
        assert [m["content"] for m in msgs] == [t["text"] for t in row["turns"]]


@pytest.mark.parametrize("setting", ["per_turn", "none"])
def test_sampling_seeds_decides_what_each_request_carries(tmp_path: Path, make_config, setting: str) -> None:
    """per_turn: the seed of (run seed, conversation, turn); none: no seed at all (vLLM's own generator). The
    corpus holds every conversation exactly once either way, and the manifest records the setting."""
    config = make_config(num_dialogues=8, sampling_seeds=setting)
    manifest, log, _ = generate(config, tmp_path / "out")
    expected = [turn_seed(7, c.conversation_id, c.turn) if setting == "per_turn" else None for c in log.calls]
    assert log.calls and [c.seed for c in log.calls] == expected
    assert sorted(r["conversation_index"] for r in rows(tmp_path / "out")) == list(range(8))
    assert manifest["config"]["sampling_seeds"] == setting


def test_prompt_messages_use_the_seed_and_each_side(make_config) -> None:
    from interplay.generator.dialogue.conversation import Conversation, Turn

    config = make_config(conversation={"max_turns": 6, "item_noun": "film"})
    seed = make_seeds(3)[2]
    conv = Conversation("x", 0, seed)
    render = prompt_messages(config, make_catalog())
    user = render(conv, "user")
    assert user[0]["role"] == "system" and seed.preference_summary in user[0]["content"]
    assert "genres: Sci-Fi; decade: 1990s" in user[0]["content"] and "[ACCEPT]" in user[0]["content"]
    assert user[1] == {"role": "user", "content": "Hi! What kind of film are you in the mood for today?"}
    conv.turns.append(Turn("user", "Hello.", "Hello.", 1, 1, 0, "stop", []))
    rec = render(conv, "recommender")
    assert seed.preference_summary not in rec[0]["content"] and "film" in rec[0]["content"]
    assert rec[1:] == [{"role": "user", "content": "Hello."}]
    assert render(conv, "user")[2:] == [{"role": "assistant", "content": "Hello."}]


# -------------------------------------------------------------------------------------------- resume


def test_resume_after_engine_dead_generates_only_the_missing(tmp_path: Path, make_config) -> None:
    config = make_config(num_dialogues=20, dialogues_per_shard=5, max_in_flight=4)
    out = tmp_path / "out"

    # First run: the engine dies when conversation 10 sends its first request.
    dead_log = EngineLog()
    with pytest.raises(EngineDead):
        generate(config, out, dead_log, dead_on=lambda rid: rid == "s10@0")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running"
    first = rows(out)
    done = [r["conversation_index"] for r in first]
    assert len(done) == len(set(done)) and 5 <= len(done) < 20
    assert 10 not in done
    assert manifest["totals"]["num_dialogues"] == len(done)
    assert sum(s["num_rows"] for s in logged(out)) == len(done)
    first_files = file_digests(out)

    # Second run on the same directory with a healthy engine.
    generation = Generation(config, out)
    assert generation.num_already_done == len(done)
    assert generation.num_remaining == 20 - len(done)
    log = EngineLog()
    engines = fake_open_engines(make_clients(log))
    manifest = asyncio.run(generation.run(engines))
    regenerated = log.conversation_ids()
    assert len(regenerated) == 20 - len(done)
    assert not set(regenerated) & {r["conversation_id"] for r in first}
    final = rows(out)
    assert sorted(r["conversation_index"] for r in final) == list(range(20))
    assert manifest["status"] == "complete"
    assert manifest["totals"]["num_dialogues"] == 20
    assert manifest["totals"]["outcomes"] == dict(Counter(r["outcome"] for r in final))
    assert len(manifest["runs"]) == 2
    assert all(file_digests(out)[name] == digest for name, digest in first_files.items())  # untouched

    # Identical to a run that was never interrupted.
    clean_out = tmp_path / "clean"
    generate(config, clean_out)
    assert by_id(final) == by_id(rows(clean_out))
    assert json.loads((clean_out / "manifest.json").read_text())["totals"] == manifest["totals"]


def test_resume_of_a_complete_corpus_starts_no_engine(tmp_path: Path, make_config) -> None:
    config = make_config(num_dialogues=10)
    out = tmp_path / "out"
    generate(config, out)
    before = file_digests(out)
    manifest, log, engines = generate(config, out)
    assert engines.opened == 0 and log.calls == []
    assert manifest["status"] == "complete" and file_digests(out) == before


def test_crash_artifacts_are_cleaned_and_counted(tmp_path: Path, make_config) -> None:
    config = make_config(num_dialogues=15, dialogues_per_shard=5)
    out = tmp_path / "out"
    seen_during_run: list[list[str]] = []

    def check_listing(request_id: str) -> None:
        names = [p.name for p in out.glob("*.parquet")]
        seen_during_run.append(names)
        for path in out.glob("*.parquet"):
            pq.read_table(path)  # complete files only

    generate(config, out, on_submit=check_listing)
    assert seen_during_run and any(seen_during_run[-1])
    assert all(SHARD.match(n) for names in seen_during_run for n in names)
    original = json.loads((out / "manifest.json").read_text())
    original_log = logged(out)
    assert len(original_log) == 3

    # A crash after the last shard was renamed into place, its log line cut off half-way, and a half-written
    # shard of a later run.
    damaged = {**original, "status": "running"}
    (out / "manifest.json").write_text(json.dumps(damaged))
    lines = (out / "shards.jsonl").read_bytes().splitlines(keepends=True)
    (out / "shards.jsonl").write_bytes(b"".join(lines[:2]) + lines[2][:20])
    tmp = out / ".shard-00009.parquet.tmp"
    tmp.write_bytes(b"PAR1 garbage, not a parquet file")
    assert sorted(p.name for p in out.glob("*.parquet")) == [f"shard-{i:05d}.parquet" for i in range(3)]

    generation = Generation(config, out)
    assert not tmp.exists()
    assert set(generation.writer.done) == set(range(15))
    assert generation.num_remaining == 0
    assert logged(out) == original_log  # the torn line dropped, its shard read and logged again
    manifest, log, engines = generate(config, out)
    assert engines.opened == 0
    assert manifest["status"] == "complete"
    assert manifest["totals"] == original["totals"]
    # .lease.lock stays (flock needs a file that is never replaced), and so does the layout record; the lease
    # itself is released at close. The complete corpus has its dataset card (tests/test_card.py).
    assert sorted(p.name for p in out.iterdir()) == [".layout.json", ".lease.lock", "README.md", "manifest.json"] + [
        f"shard-{i:05d}.parquet" for i in range(3)] + ["shards.jsonl"]


def test_crash_after_a_shard_before_its_manifest_entry_resumes(tmp_path: Path, make_config) -> None:
    config = make_config(num_dialogues=10, dialogues_per_shard=5)
    out = tmp_path / "out"
    generate(config, out)
    clean = rows(out)
    # Simulate the kill: the first shard is in place but the manifest is still the one written when the
    # directory was opened (no shards listed), and the second shard was cut off mid-write.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["status"] = "running"
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "shards.jsonl").write_bytes(b"")
    (out / "shard-00001.parquet").unlink()
    (out / ".shard-00001.parquet.tmp").write_bytes(b"partial")
    generation = Generation(config, out)
    assert generation.num_already_done == 5
    generate(config, out)
    assert by_id(rows(out)) == by_id(clean)


def test_opening_writes_a_manifest_and_ignores_tmp_leftovers(tmp_path: Path, make_config) -> None:
    """A run killed while writing its first shard leaves only a tmp file: that directory is resumable."""
    config = make_config(num_dialogues=5)
    out = tmp_path / "out"
    out.mkdir()
    tmp = out / ".shard-00000.parquet.tmp"
    tmp.write_bytes(b"partial")
    generation = Generation(config, out)
    assert not tmp.exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["status"], manifest["num_shards"], manifest["identity"]["config"]) == ("running", 0, config.hash())
    assert generation.num_remaining == 5


def _send_sigint_at(count: int, times: int = 1):
    """An on_submit hook: Ctrl-C (`times` in a row) when the count-th request is sent, while the run's own
    SIGINT handler is certainly installed."""
    calls = {"n": 0}

    def on_submit(request_id: str) -> None:
        calls["n"] += 1
        if calls["n"] == count:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
    return on_submit


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs the main thread")
def test_first_ctrl_c_finishes_active_conversations_then_resume(tmp_path: Path, make_config) -> None:
    config = make_config(num_dialogues=20, max_in_flight=4, dialogues_per_shard=3)
    out = tmp_path / "out"
    manifest, log, _ = generate(config, out, on_submit=_send_sigint_at(10))
    assert manifest["status"] == "running"
    records = rows(out)
    assert 4 <= len(records) < 20
    # Every conversation that began was run to its end and written; none was cut short.
    assert {r["conversation_id"] for r in records} == set(log.conversation_ids())
    assert all(c.result == "ok" for c in log.calls)
    assert {r["outcome"] for r in records} <= {"accepted", "gave_up", "max_turns"}
    assert manifest["totals"]["num_dialogues"] == len(records)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler removed again

    manifest, log2, _ = generate(config, out)
    assert len(log2.conversation_ids()) == 20 - len(records)
    assert manifest["status"] == "complete"
    assert sorted(r["conversation_index"] for r in rows(out)) == list(range(20))


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs the main thread")
def test_second_ctrl_c_stops_at_once_and_keeps_finished_ones(tmp_path: Path, make_config) -> None:
    config = make_config(num_dialogues=20, max_in_flight=4, dialogues_per_shard=50)
    out = tmp_path / "out"
    log = EngineLog()
    with pytest.raises((asyncio.CancelledError, KeyboardInterrupt)):
        generate(config, out, log, on_submit=_send_sigint_at(30, times=2))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running"
    records = rows(out)  # the buffer was written although the shard was not full
    finished = {r["conversation_id"] for r in records}
    assert records and finished < set(log.conversation_ids())
    assert not list(out.glob(".*.tmp"))
    assert "cancelled" in {c.result for c in log.calls}
    assert manifest["totals"]["num_dialogues"] == len(records)
    manifest, _, _ = generate(config, out)
    assert manifest["status"] == "complete"
    assert sorted(r["conversation_index"] for r in rows(out)) == list(range(20))


# ---------------------------------------------------------------------------------- output directory


def test_different_config_is_refused_then_overwritten(tmp_path: Path, make_config) -> None:
    out = tmp_path / "out"
    generate(make_config(num_dialogues=10), out)
    before = file_digests(out)
    other = make_config(num_dialogues=10, conversation={"max_turns": 4})
    assert other.hash() != make_config(num_dialogues=10).hash()
    with pytest.raises(OutputError, match="different config"):
        Generation(other, out)
    assert file_digests(out) == before

    manifest, log, _ = generate(other, out, overwrite=True)
    assert len(log.conversation_ids()) == 10
    records = rows(out)
    assert sorted(r["conversation_index"] for r in records) == list(range(10))
    assert max(r["num_turns"] for r in records) <= 4
    assert manifest["identity"]["config"] == other.hash()
    assert manifest["config"]["conversation"]["max_turns"] == 4
    assert len(manifest["runs"]) == 1
    assert manifest["totals"]["num_dialogues"] == 10


def test_growing_the_corpus_keeps_what_is_done(tmp_path: Path, make_config) -> None:
    out = tmp_path / "out"
    small = make_config(num_dialogues=10, max_in_flight=4)
    generate(small, out)
    before_rows = by_id(rows(out))
    before_files = file_digests(out)

    bigger = make_config(num_dialogues=20, max_in_flight=8)
    assert bigger.hash() == small.hash()
    manifest, log, _ = generate(bigger, out)
    assert sorted(log.conversation_ids()) == [f"s{i:02d}" for i in range(10, 20)]
    records = rows(out)
    assert sorted(r["conversation_index"] for r in records) == list(range(20))
    assert {k: v for k, v in by_id(records).items() if k in before_rows} == before_rows
    assert all(file_digests(out)[name] == digest for name, digest in before_files.items())
    assert manifest["status"] == "complete"
    assert manifest["num_dialogues"] == 20 and manifest["totals"]["num_dialogues"] == 20

    # Asking for fewer than there are is complete at once.
    manifest, log, engines = generate(make_config(num_dialogues=15), out)
    assert engines.opened == 0 and manifest["status"] == "complete"


def test_non_empty_directory_without_manifest_is_refused(tmp_path: Path, make_config) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        Generation(make_config(num_dialogues=5), out)
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------------------------------------- seeds


def test_more_dialogues_than_seeds_reuses_seeds(tmp_path: Path, make_config) -> None:
    seeds_path = write_seeds(tmp_path / "seven.parquet", make_seeds(7))
    config = make_config(seeds_path=seeds_path, num_dialogues=17, dialogues_per_shard=4)
    out = tmp_path / "out"
    generate(config, out)
    records = sorted(rows(out), key=lambda r: r["conversation_index"])
    assert [r["conversation_index"] for r in records] == list(range(17))
    expected = [f"s{i:02d}" for i in range(7)] + [f"s{i:02d}#1" for i in range(7)] + [f"s{i:02d}#2" for i in range(3)]
    assert [r["conversation_id"] for r in records] == expected
    assert [r["seed_id"] for r in records] == [f"s{i % 7:02d}" for i in range(17)]
    # A seed's later passes are other conversations (other turn seeds), not copies.
    assert sum(records[i]["turns"] != records[i + 7]["turns"] for i in range(7)) >= 4


def test_skipped_seed_rows_are_counted(tmp_path: Path, make_config) -> None:
    good = [{"seed_id": s.seed_id, "preference_summary": s.preference_summary,
             "target_attributes": s.target_attributes, "target_item_id": s.target_item_id} for s in make_seeds(6)]
    bad = [
        {"seed_id": "e1", "preference_summary": "", "target_attributes": {"genres": ["Crime"]}},
        {"seed_id": "e2", "preference_summary": "   ", "target_attributes": {"genres": ["Crime"]}},
        {"seed_id": "s01", "preference_summary": "A duplicate.", "target_attributes": {"genres": ["Crime"]}},
        {"seed_id": "e3", "preference_summary": "No attributes."},
    ]
    lines = [json.dumps(r) for r in good[:3]] + [json.dumps(r) for r in bad] + ["{not json"] + \
            [json.dumps(r) for r in good[3:]]
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n")
    config = make_config(seeds_path=path, num_dialogues=8)
    out = tmp_path / "out"
    manifest, log, _ = generate(config, out)
    assert manifest["seeds"] == {"path": str(path), "sha256": file_digest(path), "num_rows": 11, "num_valid": 6,
                                 "skipped": {"empty preference_summary": 2, "duplicate seed_id": 1,
                                             "missing target_attributes": 1, "invalid JSON": 1}}
    records = rows(out)
    ids = {r["conversation_id"] for r in records}
    assert ids == {f"s{i:02d}" for i in range(6)} | {"s00#1", "s01#1"}
    assert not ids & {"e1", "e2", "e3"}
    s01 = by_id(records)["s01"]
    assert s01["preference_summary"] == good[1]["preference_summary"]  # the first s01, not the duplicate
