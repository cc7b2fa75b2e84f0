"""Disjoint, deterministic partitions of a run, for many processes writing into one output directory.

Conversation i belongs to partition hash(seed_id) mod count. Every partition walks the same global order and keeps
its own conversations, so the partitions are disjoint, their union is the whole run, and a conversation's id and
index do not depend on how many partitions there are. Each partition writes its own shards and manifest:

    shard-p003of008-00000.parquet     manifest-p003of008.json
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

TAG_RE = re.compile(r"p(\d{3,})of(\d{3,})")


@dataclass(frozen=True, slots=True)
class Partition:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"partition index {self.index} is not in 0..{self.count - 1}")

    @property
    def tag(self) -> str:
        return f"p{self.index:03d}of{self.count:03d}"

    def owns(self, seed_id: str) -> bool:
        return partition_of(seed_id, self.count) == self.index

    @classmethod
    def parse(cls, tag: str) -> Partition:
        match = TAG_RE.fullmatch(tag)
        if not match:
            raise ValueError(f"not a partition tag: {tag!r}")
        return cls(int(match.group(1)), int(match.group(2)))


def partition_of(seed_id: str, count: int) -> int:
    # A stable hash (Python's hash() is salted per process).
    digest = hashlib.blake2b(seed_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % count
