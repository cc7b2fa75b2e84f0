"""Ship the simulators `make reproduce` trained: copy both LoRA adapters into adapters/embedded/ with their
training record, which `interplay prepare` merges and configs/embedded-trained.yaml serves.

    python -m experiments.ship [--from out/reproduce]     # after `make reproduce` (reads OUT/result.json)

The record (adapters/embedded/record.json) says what made them: the command, the teacher corpus and the training
of each role (steps, held-out curve), the evaluation figures of the run, the machine, and the sha256 of every
shipped file; `check_shipped` (tests/test_shipped_adapters.py) holds the files to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from interplay.common.roles import ROLES

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "adapters" / "embedded"
# What an adapter directory of `interplay train` holds that serving and its record need (not the loss plot).
FILES = ("adapter_config.json", "adapter_model.safetensors", "interplay_base.json", "loss.json", "data.json",
         "train_config.yaml")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ship(out: Path, result: dict[str, Any], dest: Path = SHIPPED) -> Path:
    """Copy OUT/adapters/<role> into dest/<role> and write dest/record.json."""
    files: dict[str, dict[str, str]] = {}
    for role in ROLES:
        source, target = out / "adapters" / role, dest / role
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in FILES:
            shutil.copyfile(source / name, target / name)
        files[role] = {name: sha256(target / name) for name in FILES}
    record = {
        "command": "make reproduce, then python -m experiments.ship",
        "made": time.strftime("%Y-%m-%d"),
        "machine": result.get("machine"),
        "size": result.get("size"),
        "num_dialogues": result.get("num_dialogues"),
        "train": result.get("train"),
        "evaluation": result.get("corpora"),
        "files": files,
    }
    (dest / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    return dest


def check_shipped(dest: Path = SHIPPED) -> list[str]:
    """What differs between the shipped files and their record ([] when they match)."""
    record = json.loads((dest / "record.json").read_text())
    problems = []
    for role, files in record["files"].items():
        for name, digest in files.items():
            path = dest / role / name
            if not path.is_file():
                problems.append(f"{role}/{name}: missing")
            elif sha256(path) != digest:
                problems.append(f"{role}/{name}: sha256 differs from the record")
        steps = json.loads((dest / role / "loss.json").read_text())["steps"]
        if steps != record["train"][role]["steps"]:
            problems.append(f"{role}: loss.json says {steps} steps, the record {record['train'][role]['steps']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="out", default="out/reproduce", help="the reproduce output (default "
                                                                           "out/reproduce)")
    parser.add_argument("--any-size", action="store_true", help="ship the adapters of a quick or tiny run too")
    args = parser.parse_args(argv)
    out = Path(args.out)
    result_file = out / "result.json"
    if not result_file.is_file():
        print(f"ship: {result_file} not found: run `make reproduce` (with --out {out}) first", file=sys.stderr)
        return 2
    result = json.loads(result_file.read_text())
    if result.get("size") != "full" and not args.any_size:
        print(f"ship: not shipped: {out} is a {result.get('size')} run (--any-size ships it anyway)")
        return 0
    dest = ship(out, result)
    print(f"shipped: {dest} (record: {dest / 'record.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
