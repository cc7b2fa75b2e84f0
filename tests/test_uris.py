"""`show`, `report` and `status` read the same URIs `generate` writes (file:// here; s3:// and gs:// go through the
same pyarrow filesystem calls), and `show` reads a partitioned run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fake_engine import fake_open_engines, make_clients
from interplay.cli import main
from interplay.common.partition import Partition
from interplay.generator.runtime.run import Generation


def generate(config, out: str, partition: Partition | None = None) -> dict:
    return asyncio.run(Generation(config, out, partition=partition).run(fake_open_engines(make_clients())))


def test_show_report_and_status_take_a_uri(tmp_path: Path, make_config, capsys, monkeypatch):
    uri = f"file://{tmp_path}/corpus"
    assert generate(make_config(num_dialogues=6), uri)["status"] == "complete"
    assert main(["show", uri, "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== ") == 2 and "USER:" in out
    assert main(["status", uri]) == 0
    assert "single run: complete, 6 dialogues" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    assert main(["report", uri, "--no-plots"]) == 0
    assert (tmp_path / "report-corpus" / "report.md").is_file()  # local files, in the working directory
    assert not (tmp_path / "file:").exists()


def test_show_and_status_read_a_partitioned_run_by_uri(tmp_path: Path, make_config, capsys):
    uri, config = f"file://{tmp_path}/parts", make_config(num_dialogues=8)
    generate(config, uri, Partition(0, 2))
    assert main(["status", uri]) == 1  # partition 1 never ran
    assert main(["show", uri, "-n", "1"]) == 0  # no combined manifest yet: the partition's is enough
    assert capsys.readouterr().out.count("=== ") == 1
    generate(config, uri, Partition(1, 2))
    assert main(["status", uri]) == 0
    assert (tmp_path / "parts" / "manifest.json").is_file()
