"""Put a block table's entries in file order, in bounded memory.

Theory of operation
-------------------
A streaming reader meets the data blocks in *file* order, but a block table (BAT) lists
them in *guest* order. The readers pack each allocated entry into one 64-bit key,
``(file position << index_bits) | guest block index``, so that sorting the keys sorts
the blocks by file position.

Sorting millions of keys as a Python list costs about 40 bytes per key. ``KeySorter``
instead sorts ``SORT_RUN_KEYS`` keys at a time (the list is transient and small), keeps
each sorted run as an ``array('Q')`` (8 bytes per key), and merges the runs lazily with
``heapq.merge`` whenever someone iterates. Readers charge ``KEY_BYTES`` per key against
``limits.max_metadata_bytes`` before adding them.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterator

SORT_RUN_KEYS = 65536
"""Keys sorted together in one transient list (about 2.5 MiB of Python objects)."""
KEY_BYTES = 8
"""Memory held per key once sealed (one ``array('Q')`` slot)."""
KEY_LIMIT = 1 << 64
"""Keys are unsigned 64-bit."""


class KeySorter:
    """Collects 64-bit keys and hands them back in ascending order, as often as asked."""

    def __init__(self) -> None:
        self._runs: list[array[int]] = []
        self._chunk: list[int] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, key: int) -> None:
        """Add one key (0 <= key < 2**64)."""
        assert 0 <= key < KEY_LIMIT, f"key {key} does not fit 64 bits"
        self._chunk.append(key)
        self._count += 1
        if len(self._chunk) >= SORT_RUN_KEYS:
            self._seal()

    def merged(self) -> Iterator[int]:
        """All keys added so far, ascending."""
        self._seal()
        if len(self._runs) == 1:
            return iter(self._runs[0])
        return heapq.merge(*self._runs)

    def _seal(self) -> None:
        if self._chunk:
            self._runs.append(array("Q", sorted(self._chunk)))
            self._chunk = []
