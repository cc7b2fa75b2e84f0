"""The set of finished conversation indices, one bit each.

A run plans conversations 0..N-1 and finishes them roughly in order, so a bitmap is the compact form: a million
done indices take 125 KB here against about 60 MB as a Python set of ints, and memory no longer grows with the
corpus beyond that.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class DoneSet:
    __slots__ = ("_bits", "_count")

    def __init__(self, indices: Iterable[int] = ()):
        self._bits = bytearray()
        self._count = 0
        for i in indices:
            self.add(i)

    def add(self, index: int) -> None:
        if index < 0:
            raise ValueError(f"conversation index {index} < 0")
        byte, bit = index >> 3, 1 << (index & 7)
        if byte >= len(self._bits):  # grow by half again, so appending in order costs amortised O(1)
            self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits) // 2)))
        if not self._bits[byte] & bit:
            self._bits[byte] |= bit
            self._count += 1

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or index < 0:
            return False
        byte = index >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (index & 7)))

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        for byte_index, byte in enumerate(self._bits):
            if byte:
                base = byte_index << 3
                yield from (base + k for k in range(8) if byte & (1 << k))

    def count_below(self, n: int) -> int:
        """How many done indices are < n."""
        full, rest = divmod(max(n, 0), 8)
        count = int.from_bytes(self._bits[:full], "little").bit_count()
        if rest and full < len(self._bits):
            count += (self._bits[full] & ((1 << rest) - 1)).bit_count()
        return count

    def __repr__(self) -> str:
        return f"DoneSet({self._count} done)"
