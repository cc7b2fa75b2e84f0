"""Duplicate dialogues: exact duplicates of the opening user turn and of the whole text, counted by 64-bit hashes
of the normalised text, and near duplicates of the whole text by MinHash LSH (datasketch) on a bounded sample.

    duplicates = Duplicates(seed=0, near_sample=20_000)
    duplicates.add(conversation_id, turns)     # every row
    duplicates.result(near_sample=m)           # {"openings", "whole_text", "near_whole_text"}
    whole_text_key(turns)                      # the key `interplay export --dedup` groups by (None: no turns)

Memory: 8 bytes per dialogue for each exact hash (16 MB per million dialogues; no text is kept), and one MinHash
per sampled dialogue (NUM_PERM 32-bit values and the object around them: about 20 MB for 20,000).
docs/report.md defines each figure.
"""

from __future__ import annotations

import hashlib
import heapq
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from interplay.report.decisions import proportion
from interplay.report.teacher import normalised
from interplay.report.text import ngrams, sample_key, words

NEAR_THRESHOLD = 0.8  # estimated Jaccard similarity of the word-shingle sets at which two dialogues are near duplicates
NUM_PERM = 128        # MinHash permutations
SHINGLE_WORDS = 3     # word n-grams per turn; a turn of fewer words is one shingle
NEAR_SAMPLE = 20_000  # dialogues in the near-duplicate sample (at most)
MINHASH_SEED = 1
_TURN_SEP, _ROLE_SEP = "\x1e", "\x1f"  # whitespace to re's \s: normalised text never holds them, so they only separate


def text_key(text: str) -> int:
    """A fixed 64-bit hash of a text: the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def normalised_turns(turns: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(role, normalised text) of every turn, in order."""
    return [(t["role"], normalised(t.get("text"))) for t in turns]


def opening_text(turns: Sequence[tuple[str, str]]) -> str | None:
    """The first user turn's normalised text; None for a dialogue without a user turn."""
    return next((text for role, text in turns if role == "user"), None)


def whole_text(turns: Sequence[tuple[str, str]]) -> str:
    """Every turn in order, each as its role and its normalised text."""
    return _TURN_SEP.join(f"{role}{_ROLE_SEP}{text}" for role, text in turns)


def whole_text_key(turns: Sequence[Mapping[str, Any]]) -> int | None:
    """The key `interplay export --dedup` groups by; None for a dialogue without turns."""
    return text_key(whole_text(normalised_turns(turns))) if turns else None


def shingles(turns: Sequence[Mapping[str, Any]]) -> set[bytes]:
    """Word SHINGLE_WORDS-grams of each turn (never across turns), each tagged with its role."""
    out = set()
    for t in turns:
        tokens = words(t.get("text"))
        for gram in ngrams(tokens, min(SHINGLE_WORDS, len(tokens))) if tokens else ():
            out.add(f"{t['role']}{_ROLE_SEP}{' '.join(gram)}".encode())
    return out


def duplicated(keys: array) -> tuple[int, int]:
    """(how many of the keys another key equals, how many distinct keys), counted by Arrow, not Python."""
    if not keys:
        return 0, 0
    import pyarrow as pa
    import pyarrow.compute as pc

    counts = pc.value_counts(pa.Array.from_buffers(pa.uint64(), len(keys), [None, pa.py_buffer(keys)]))
    counts = counts.field("counts")
    in_groups = pc.sum(pc.filter(counts, pc.greater_equal(counts, 2))).as_py()
    return in_groups or 0, len(counts)


def exact_figure(keys: array) -> dict[str, Any]:
    count, distinct = duplicated(keys)
    return {"share": proportion(count, len(keys)), "count": count, "denominator": len(keys), "num_distinct": distinct}


def near_duplicates(minhashes: Sequence[Any]) -> list[bool]:
    """Which of the MinHashes, taken in order, have a near duplicate among them. Each is looked up in an LSH index
    of the ones kept so far; one whose estimated Jaccard with a candidate reaches NEAR_THRESHOLD is a near
    duplicate, and so is every such candidate; one with none is kept. Only dialogues that matched nothing are
    indexed, so a corpus that collapses onto a few dialogues costs as little as one that does not; one that LSH
    missed (it has a near duplicate but shared no band with it) is indexed too, and found by those after it."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=NEAR_THRESHOLD, num_perm=NUM_PERM)
    near = [False] * len(minhashes)
    for i, m in enumerate(minhashes):
        matches = [j for j in lsh.query(m) if minhashes[j].jaccard(m) >= NEAR_THRESHOLD]
        if not matches:
            lsh.insert(i, m)
        for j in matches:
            near[i] = near[j] = True
    return near


class Duplicates:
    """Accumulates the exact hashes of every dialogue and the MinHashes of a sample of them: the dialogues with the
    NEAR_SAMPLE smallest keys of (seed, conversation id), the same ones however the shards are ordered."""

    def __init__(self, *, seed: int = 0, near_sample: int = NEAR_SAMPLE):
        self.seed = seed
        self.capacity = near_sample
        self.num_added = 0
        self.openings = array("Q")
        self.whole = array("Q")
        self._heap: list[tuple[int, int, Any]] = []  # (-key, order, MinHash): the root is the largest key kept
        self._prototype: Any = None                 # one MinHash whose permutations every copy shares

    def add(self, conversation: str, turns: Sequence[Mapping[str, Any]]) -> None:
        self.num_added += 1
        texts = normalised_turns(turns)
        if (opening := opening_text(texts)) is not None:
            self.openings.append(text_key(opening))
        if texts:
            self.whole.append(text_key(whole_text(texts)))
        key = sample_key(self.seed, conversation, -1)
        if len(self._heap) >= self.capacity and -self._heap[0][0] <= key:
            return  # not in the sample: no shingles, no MinHash
        if not (grams := shingles(turns)):
            return  # no word to compare
        entry = (-key, self.num_added, self._minhash(grams))
        (heapq.heappush if len(self._heap) < self.capacity else heapq.heapreplace)(self._heap, entry)

    def _minhash(self, grams: set[bytes]) -> Any:
        if self._prototype is None:
            from datasketch import MinHash

            self._prototype = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)
        m = self._prototype.copy()
        m.update_batch(sorted(grams))
        return m

    @property
    def num_sampled(self) -> int:
        return len(self._heap)

    def result(self, near_sample: int | None = None) -> dict[str, Any]:
        """near_sample: dialogues of the sample to measure near duplicates on (the smallest keys); `compare` passes
        the smallest sample of the corpora reported together. None: all of this corpus's sample."""
        m = self.num_sampled if near_sample is None else min(near_sample, self.num_sampled)
        sample = [mh for _, _, mh in sorted(self._heap, key=lambda e: (-e[0], e[1]))[:m]]
        count = sum(near_duplicates(sample))
        return {
            "openings": exact_figure(self.openings),
            "whole_text": exact_figure(self.whole),
            "near_whole_text": {"share": proportion(count, m), "count": count, "denominator": m,
                                "threshold": NEAR_THRESHOLD, "num_perm": NUM_PERM, "shingle_words": SHINGLE_WORDS,
                                "max_sample": self.capacity},
        }
