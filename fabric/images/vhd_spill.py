"""File bytes kept aside until the table that explains them arrives.

Theory of operation
-------------------
Before a reader knows where the data blocks are, a byte it cannot place may still turn
out to be block data, or a table stored before the header that locates it. ``SpillLog``
keeps such bytes in the injected ``Spill`` area, keyed by file offset, in pieces of at
most ``SPILL_PIECE_BYTES``: contiguous bytes are gathered into one piece first, so even
a one-byte-at-a-time upload makes few pieces. ``limits.max_spill_bytes`` bounds the total.

Kept bytes are read back in two ways: ``read`` copies a range without forgetting it (a
late table), ``drain`` hands every piece out once, in file order (the block plan came).
"""

from __future__ import annotations

from collections.abc import Iterator

from fabric.images.base import ImageError, MiB, Spill

SPILL_PIECE_BYTES = 1 * MiB
"""Spilled bytes are stored in pieces of at most this size."""


class SpillLog:
    """Bytes at file offsets, kept in a ``Spill`` area and read back in file order."""

    def __init__(self, fmt: str, spill: Spill, limit_bytes: int) -> None:
        self._fmt = fmt
        self._spill = spill
        self._limit = limit_bytes
        self._lengths: dict[int, int] = {}  # spill key (file offset) -> piece length
        self._pending = bytearray()  # contiguous bytes not yet stored
        self._pending_start = 0

    def append(self, pos: int, piece: memoryview) -> None:
        """Keep ``piece``, the file bytes at ``pos``; refuse beyond the spill limit."""
        if self._pending and self._pending_start + len(self._pending) != pos:
            self._flush()
        if self._spill.held_bytes + len(self._pending) + len(piece) > self._limit:
            raise ImageError(
                f"{self._fmt}: more than {self._limit} bytes arrive before the table that "
                "maps them (spill limit)"
            )
        while piece:
            if not self._pending:
                self._pending_start = pos
            n = min(len(piece), SPILL_PIECE_BYTES - len(self._pending))
            self._pending += piece[:n]
            piece, pos = piece[n:], pos + n
            if len(self._pending) >= SPILL_PIECE_BYTES:
                self._flush()

    def read(self, start: int, end: int) -> bytes:
        """The kept bytes from ``start`` on, up to ``end``; shorter if a gap comes first."""
        self._flush()
        out = bytearray()
        for key in sorted(self._lengths):
            have = start + len(out)
            if key + self._lengths[key] <= have:
                continue
            if key > have or have >= end:
                break
            data = self._spill.take(key)
            self._spill.put(key, data)
            out += data[have - key : end - key]
        return bytes(out)

    def drain(self) -> Iterator[tuple[int, bytes]]:
        """Hand out and forget every kept piece, as (file offset, bytes), ascending."""
        self._flush()
        for key in sorted(self._lengths):
            del self._lengths[key]
            yield key, self._spill.take(key)

    def _flush(self) -> None:
        if self._pending:
            self._spill.put(self._pending_start, bytes(self._pending))
            self._lengths[self._pending_start] = len(self._pending)
            self._pending = bytearray()
