"""The dataset card (README.md, interplay/generator/output/card.py): written whole once a corpus is complete, by the
run or by `interplay status` for a partitioned one, read by `datasets.load_dataset(DIR)` offline, rewritten (never
appended) on resume, absent while the corpus is incomplete, and never a reason for a run to fail. The fake engine
with the real scheduler and writer."""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from fake_engine import fake_open_engines, make_clients
from interplay.common.partition import Partition
from interplay.distributed.status import report
from interplay.generator.output.card import CARD, is_hand_edited, refresh_card, render_card
from interplay.generator.output.records import SCHEMA
from interplay.generator.output.storage import Storage
from interplay.generator.output.writer import OutputError
from interplay.generator.runtime.run import Generation
from interplay.generator.runtime.scheduler import EngineDead

COMMAND = "interplay generate --config configs/embedded.yaml --output out/x --num-dialogues 12"


def generate(config, out: Path, *, partition: Partition | None = None, overwrite: bool = False,
             command: str | None = None, **client_kw: Any) -> dict[str, Any]:
    generation = Generation(config, out, partition=partition, overwrite=overwrite)
    if command:
        generation.writer.run_info["command"] = command  # what `interplay generate` records (generate.py)
    return asyncio.run(generation.run(fake_open_engines(make_clients(**client_kw))))


def card(out: Path) -> tuple[dict[str, Any], str]:
    """(the YAML header, the body) of the card in `out`."""
    text = (out / CARD).read_text()
    assert text.startswith("---\n") and text.count("\n---\n") == 1, text  # one header: written whole
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def load(out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    return datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))


def test_a_complete_corpus_has_a_hub_card_with_what_made_it(tmp_path: Path, make_config) -> None:
    out = tmp_path / "out"
    config = make_config(num_dialogues=12, license="cc-by-4.0")
    manifest = generate(config, out, command=COMMAND)
    head, body = card(out)

    assert set(head) >= {"configs", "license", "task_categories", "language", "size_categories", "tags"}
    assert head["configs"] == [{"config_name": "default",
                                "data_files": [{"split": "train", "path": "shard-*.parquet"}]}]
    assert head["license"] == "cc-by-4.0" and head["size_categories"] == ["n<1K"]
    assert head["task_categories"] == ["text-generation"] and head["language"] == ["en"]
    assert "synthetic" in head["tags"]

    identity, totals = manifest["identity"], manifest["totals"]
    assert "12 dialogues in 3 Parquet shards" in body
    assert "`reference_free`" in body
    for role in ("user", "recommender"):
        assert f"| {role} | {config.engine['model']} | {identity[f'model.{role}']} | - | - |" in body
        assert json.dumps(config.sampling(role)) in body
    for outcome, count in totals["outcomes"].items():
        assert f"| {outcome} | {count} | {count / 12:.1%} |" in body
    assert f"{config.seeds.path} (sha256 {identity['seeds']})" in body
    assert f"{config.seeds.catalog} (sha256 {identity['catalog']})" in body
    assert f"run seed {config.seed}" in body and manifest["config_hash"] in body
    assert f"```bash\n{COMMAND}\n```" in body
    assert "No `interplay report` has been run" in body
    assert not is_hand_edited((out / CARD).read_text())
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_load_dataset_reads_the_corpus_through_its_card_offline(tmp_path: Path, make_config, monkeypatch) -> None:
    out = tmp_path / "out"
    generate(make_config(num_dialogues=12, dialogues_per_shard=5), out)
    # What else an output holds must not confuse the reader: the card's data_files name the shards.
    (out / "report").mkdir()
    (out / "report" / "report.json").write_text(json.dumps({"corpora": []}))
    (out / "logs").mkdir()
    (out / "logs" / "engine.log").write_text("INFO vLLM\n")
    (out / "failures.jsonl").write_text(json.dumps({"index": 99, "error": "x"}) + "\n")
    ds = load(out, tmp_path, monkeypatch)
    assert list(ds) == ["train"]
    assert ds["train"].num_rows == 12 and ds["train"].column_names == SCHEMA.names
    assert sorted(ds["train"]["conversation_index"]) == list(range(12))


def test_a_resumed_run_rewrites_the_card_whole(tmp_path: Path, make_config, capsys) -> None:
    out = tmp_path / "out"
    # Incomplete: the engine dies at conversation 3's first request. No card for an incomplete corpus.
    with pytest.raises(EngineDead):
        generate(make_config(num_dialogues=10), out, dead_on=lambda rid: rid == "s03@0")
    assert not (out / CARD).exists()
    generate(make_config(num_dialogues=10), out)  # the resume completes it
    assert "10 dialogues in" in card(out)[1]
    # A larger --num-dialogues grows the corpus: the card is replaced, not added to.
    generate(make_config(num_dialogues=15), out)
    head, body = card(out)
    assert "15 dialogues in" in body and "10 dialogues in" not in body
    assert (out / CARD).read_text().count("<!-- interplay dataset card") == 1
    assert "edited by hand" not in capsys.readouterr().err
    # A card edited by hand is overwritten, with one line saying so.
    (out / CARD).write_text((out / CARD).read_text().replace("# out", "# my corpus"))
    generate(make_config(num_dialogues=15), out)  # complete already: no engine, the card written again
    assert "# my corpus" not in card(out)[1] and not is_hand_edited((out / CARD).read_text())
    assert capsys.readouterr().err.count("was edited by hand") == 1


def test_partitions_combined_by_status_get_one_card_for_the_whole_corpus(tmp_path: Path, make_config,
                                                                         monkeypatch) -> None:
    out, config = tmp_path / "out", make_config(num_dialogues=20)
    generate(config, out, partition=Partition(0, 2),
             command="interplay generate --config c.yaml --output out --num-partitions 2 --partition-index 0")
    complete, table = report(out)
    assert not complete and not (out / CARD).exists()  # a partition's corpus is not the corpus
    generate(config, out, partition=Partition(1, 2),
             command="interplay generate --config c.yaml --output out --num-partitions 2 --partition-index 1")
    assert not (out / CARD).exists()  # nothing combined yet: status writes it
    complete, table = report(out)
    assert complete and table.endswith(f"manifest.json and {CARD}"), table
    head, body = card(out)
    assert head["configs"][0]["data_files"] == [{"split": "train", "path": "shard-p*.parquet"}]
    combined = json.loads((out / "manifest.json").read_text())
    first = json.loads((out / "manifest-p000of002.json").read_text())
    assert "20 dialogues in" in body and "2 partitions" in body
    assert first["identity"]["model.user"] in body and first["identity"]["catalog"] in body
    for outcome, count in combined["totals"]["outcomes"].items():
        assert f"| {outcome} | {count} |" in body
    assert "--num-partitions 2 --partition-index I" in body
    assert load(out, tmp_path, monkeypatch)["train"].num_rows == 20


def test_status_brings_the_report_figures_onto_the_card(tmp_path: Path, make_config) -> None:
    from interplay.report.cli import analyse, write_report

    out = tmp_path / "out"
    generate(make_config(num_dialogues=12), out)
    corpora = analyse([out])
    write_report(corpora, out / "report", plots=False)  # what `interplay report out --no-plots` writes
    headline = json.loads((out / "report" / "report.json").read_text())["corpora"][0]["headline"]
    assert report(out)[0]
    body = card(out)[1]
    assert "No `interplay report`" not in body
    assert f"| success_rate | {headline['success_rate']:.3f}" in body
    assert f"| mean_turns | {headline['mean_turns']:.3f} |" in body
    # What `interplay report` can call when it is done (card.refresh_card): the same card from the directory.
    before = (out / CARD).read_text()
    (out / CARD).unlink()
    assert refresh_card(out) and (out / CARD).read_text() == before


def test_a_card_that_cannot_be_written_is_one_warning_never_a_failed_run(tmp_path: Path, make_config, capsys,
                                                                        monkeypatch) -> None:
    put = Storage.write_atomic

    def write_atomic(self, name: str, data: bytes, **kw: Any) -> None:
        if name == CARD:
            raise OSError(28, "No space left on device")
        put(self, name, data, **kw)

    monkeypatch.setattr(Storage, "write_atomic", write_atomic)
    out = tmp_path / "out"
    manifest = generate(make_config(num_dialogues=8), out)
    assert manifest["status"] == "complete"
    assert sorted(i for p in out.glob("*.parquet") for i in pq.read_table(p).column("conversation_index").to_pylist()) \
        == list(range(8))
    warnings = [x for x in capsys.readouterr().err.splitlines() if CARD in x]
    assert len(warnings) == 1 and "No space left on device" in warnings[0] and "complete and intact" in warnings[0]
    assert not (out / CARD).exists()
    monkeypatch.setattr(Storage, "write_atomic", put)
    assert report(out)[0] and (out / CARD).exists()  # the message's remedy


def test_the_license_is_on_the_card_and_outside_the_corpus_identity(tmp_path: Path, make_config) -> None:
    out = tmp_path / "out"
    assert make_config(license="cc-by-4.0").hash() == make_config().hash()
    generate(make_config(num_dialogues=6), out)
    assert card(out)[0]["license"] == "unknown"
    generate(make_config(num_dialogues=6, license="mit"), out)  # the same corpus: resumed, not refused
    assert card(out)[0]["license"] == "mit"


def test_the_card_keeps_resume_and_overwrite_working(tmp_path: Path, make_config) -> None:
    out = tmp_path / "out"
    generate(make_config(num_dialogues=6), out)
    (out / "manifest.json").unlink()
    (out / ".layout.json").unlink()
    # Judged by its shards as without a card (checks.py), not refused as a directory of foreign files ...
    with pytest.raises(OutputError, match="holds shards .* but no manifest.json"):
        Generation(make_config(num_dialogues=6), out)
    # ... and --overwrite starts over: the old card goes at once, the new corpus gets its own.
    generation = Generation(make_config(num_dialogues=4, seed=99), out, overwrite=True)
    assert not (out / CARD).exists()
    asyncio.run(generation.run(fake_open_engines(make_clients())))
    assert "4 dialogues in" in card(out)[1]
    # A README.md that is not interplay's card is still someone else's file.
    other = tmp_path / "other"
    other.mkdir()
    (other / CARD).write_text("# my notes\n")
    with pytest.raises(OutputError, match="is not empty and holds no manifest.json"):
        Generation(make_config(), other)


def test_generate_records_the_command_that_makes_the_output() -> None:
    from interplay.cli import _parser
    from interplay.generate import command_line

    argv = ["generate", "--config", "configs/embedded.yaml", "--output", "out/my corpus", "--num-dialogues", "50",
            "--set", "user.sampling.temperature=0.7", "--overwrite", "--verbose", "--num-partitions", "4",
            "--partition-index", "2"]
    line = command_line(_parser().parse_args(argv))
    assert shlex.split(line) == ["interplay", *[a for a in argv if a not in ("--overwrite", "--verbose")]]


def test_a_card_without_a_report_or_a_command_says_so() -> None:
    manifest = {"status": "complete", "config": {"protocol": "reference"}, "totals": {"num_dialogues": 0},
                "num_dialogues": 5}
    text = render_card(manifest)
    assert "The command was not recorded" in text and "No `interplay report`" in text
    assert yaml.safe_load(text.split("---\n")[1])["license"] == "unknown"
    assert not is_hand_edited(text) and is_hand_edited(text.replace("reference", "reference!"))


def test_interplay_report_puts_its_figures_on_the_card(tmp_path: Path, make_config) -> None:
    from interplay.cli import main

    out = tmp_path / "out"
    generate(make_config(num_dialogues=8), out)
    assert "No `interplay report`" in card(out)[1]
    assert main(["report", str(out), "--no-plots"]) == 0
    headline = json.loads((out / "report" / "report.json").read_text())["corpora"][0]["headline"]
    assert f"| mean_turns | {headline['mean_turns']:.3f} |" in card(out)[1]
