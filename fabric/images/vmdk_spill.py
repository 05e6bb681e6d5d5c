"""File bytes held until the VMDK tables that say what they are have arrived.

While the grain directory or a grain table it names is still ahead in the file, any byte
that is not itself known metadata might turn out to be a grain table or a grain. Those
bytes go to the injected ``Spill`` area, keyed by file offset, in contiguous pieces of up
to ``SPILL_PIECE_BYTES``. A late-discovered table takes its byte range back out
(``take_ranges``); once every table is known the rest is replayed in file order
(``drain``) or thrown away (``discard``). ``limits.max_spill_bytes`` caps the total.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from fabric.images.base import ImageError, MiB, Spill

SPILL_PIECE_BYTES = 1 * MiB


class SpillBuffer:
    """Coalesces small writes into pieces, enforces the cap, and serves byte ranges."""

    def __init__(self, spill: Spill, limit_bytes: int) -> None:
        self._spill = spill
        self._limit_bytes = limit_bytes
        self._pending_offset = 0
        self._pending = bytearray()

    def add(self, offset: int, data: bytes | memoryview) -> None:
        """Hold ``data``, the file bytes at ``offset`` (offsets only ever increase)."""
        if self._spill.held_bytes + len(self._pending) + len(data) > self._limit_bytes:
            raise ImageError(
                f"vmdk: more than {self._limit_bytes} bytes arrived before the grain tables "
                "that map them (spill limit)"
            )
        if self._pending and offset != self._pending_offset + len(self._pending):
            self._flush()
        if not self._pending:
            self._pending_offset = offset
        self._pending += data
        while len(self._pending) >= SPILL_PIECE_BYTES:
            piece = bytes(self._pending[:SPILL_PIECE_BYTES])
            del self._pending[:SPILL_PIECE_BYTES]
            self._spill.put(self._pending_offset, piece)
            self._pending_offset += SPILL_PIECE_BYTES

    def take_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Remove and return the held bytes of each ``[start, end)`` of ``ranges``.

        The ranges are sorted, disjoint and wholly held. One sweep over the pieces serves
        them all, so a batch of grain tables found behind the stream costs one pass over
        the spill rather than one pass a table.
        """
        self._flush()
        keys = self._spill.keys()
        out = [bytearray() for _ in ranges]
        r = 0
        i = 0
        while r < len(ranges):
            low = ranges[r][0] + len(out[r])
            i = max(i, bisect.bisect_right(keys, low) - 1)
            assert i < len(keys) and keys[i] <= low, f"spill lost byte {low}"
            r = self._carve(keys[i], ranges, out, r)
            i += 1
        return [bytes(b) for b in out]

    def _carve(
        self, key: int, ranges: Sequence[tuple[int, int]], out: list[bytearray], r: int
    ) -> int:
        """Cut ranges ``r...`` out of the piece at ``key``; put back the rest; next ``r``."""
        piece = self._spill.take(key)
        view = memoryview(piece)
        piece_end = key + len(piece)
        cursor = key
        while r < len(ranges):
            low = ranges[r][0] + len(out[r])
            if low >= piece_end:
                break
            high = min(ranges[r][1], piece_end)
            if low > cursor:
                self._spill.put(cursor, bytes(view[cursor - key : low - key]))
            out[r] += view[low - key : high - key]
            cursor = high
            if high < ranges[r][1]:
                break
            r += 1
        if cursor == key:
            self._spill.put(key, piece)
        elif cursor < piece_end:
            self._spill.put(cursor, bytes(view[cursor - key :]))
        return r

    def drain(self) -> Iterator[tuple[int, bytes]]:
        """Remove and yield every held piece as ``(offset, data)``, in file order."""
        self._flush()
        held = self._spill.keys()  # a Spill is not iterable: keys() is its listing
        for key in held:
            yield key, self._spill.take(key)

    def discard(self) -> None:
        """Forget everything held."""
        self._pending.clear()
        held = self._spill.keys()
        for key in held:
            self._spill.take(key)

    def _flush(self) -> None:
        if self._pending:
            self._spill.put(self._pending_offset, bytes(self._pending))
            self._pending.clear()
