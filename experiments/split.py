"""MovieLens users split into training and evaluation users, and the seed file split with them.

A seed id is `ml-<user>-<movie>`, and a seed's summary is made from that user's own ratings, so splitting the
seeds by user keeps every evaluation user's ratings out of every training dialogue. The split is a hash of the
user id: deterministic, and the same whatever else the seed file holds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EVAL_PERCENT = 20


def user_of(seed_id: str) -> str:
    return seed_id.split("-")[1] if seed_id.startswith("ml-") else seed_id


def is_eval_user(user: str) -> bool:
    return int.from_bytes(hashlib.blake2b(f"eval:{user}".encode(), digest_size=8).digest(), "little") % 100 \
        < EVAL_PERCENT


def split_seeds(seeds: Path, out_dir: Path) -> dict[str, Path]:
    """Write train-seeds.parquet and eval-seeds.parquet (same order as `seeds`) and split.json (the users)."""
    table = pq.read_table(seeds)
    users = [user_of(s) for s in table.column("seed_id").to_pylist()]
    flags = [is_eval_user(u) for u in users]
    mask = pa.array(flags)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"train": out_dir / "train-seeds.parquet", "eval": out_dir / "eval-seeds.parquet"}
    pq.write_table(table.filter(pc.invert(mask)), paths["train"], compression="zstd")
    pq.write_table(table.filter(mask), paths["eval"], compression="zstd")
    record = {
        "rule": f"user in eval when blake2b('eval:<user>') % 100 < {EVAL_PERCENT}",
        "train_users": sorted({u for u, m in zip(users, flags) if not m}, key=int),
        "eval_users": sorted({u for u, m in zip(users, flags) if m}, key=int),
        "num_seeds": {"train": flags.count(False), "eval": flags.count(True)},
    }
    (out_dir / "split.json").write_text(json.dumps(record, indent=1) + "\n")
    return paths
