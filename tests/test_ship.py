"""experiments/ship.py: the adapters of a `make reproduce` run are copied with a record that holds them to account."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.ship import FILES, check_shipped, main, ship


def fake_run(out: Path, size: str = "full") -> dict:
    train = {}
    for role in ("user", "recommender"):
        adapter = out / "adapters" / role
        adapter.mkdir(parents=True)
        for name in FILES:
            (adapter / name).write_text(f"{role} {name}")
        curve = [{"step": 0, "loss": 2.0}, {"step": 5, "loss": 1.5}]
        (adapter / "loss.json").write_text(json.dumps({"steps": 5, "eval": {"curve": curve}}))
        train[role] = {"steps": 5, "eval_curve": curve}
    result = {"size": size, "train": train, "corpora": {"trained": {"success_rate": 0.5}}, "machine": "x"}
    (out / "result.json").write_text(json.dumps(result))
    return result


def test_shipped_files_match_their_record_until_one_changes(tmp_path: Path) -> None:
    dest = ship(tmp_path / "run", fake_run(tmp_path / "run"), tmp_path / "shipped")
    assert check_shipped(dest) == []
    record = json.loads((dest / "record.json").read_text())
    assert record["evaluation"]["trained"]["success_rate"] == 0.5 and record["train"]["user"]["steps"] == 5
    (dest / "user" / "adapter_model.safetensors").write_text("retrained elsewhere")
    (dest / "recommender" / "train_config.yaml").unlink()
    assert check_shipped(dest) == ["user/adapter_model.safetensors: sha256 differs from the record",
                                   "recommender/train_config.yaml: missing"]


def test_only_a_full_run_is_shipped_by_default(tmp_path: Path, capsys, monkeypatch) -> None:
    fake_run(tmp_path / "quick", size="quick")
    monkeypatch.setattr("experiments.ship.SHIPPED", tmp_path / "shipped")
    assert main(["--from", str(tmp_path / "quick")]) == 0
    assert "not shipped" in capsys.readouterr().out and not (tmp_path / "shipped").exists()
    assert main(["--from", str(tmp_path / "missing")]) == 2
