"""Writing a stream into a sparse file: blocks of zeros become holes.

A thin vdisk is mostly holes, and its stream carries them as zeros; written as they
come, a 10 GiB vdisk with 1 MiB of data takes 10 GiB of disk. ``SparseWriter`` seeks
over every all-zero block instead (and over the holes its caller knows of, ``skip``)
and sets the file's size at the end, so the copy takes the room its data takes (on
file systems with holes; elsewhere the seek fills in zeros, as a plain write would).
"""

from __future__ import annotations

from typing import BinaryIO

BLOCK_BYTES = 64 << 10
"""Zero runs are found at this granularity (a multiple of every file system's block)."""
_ZEROS = bytes(BLOCK_BYTES)


class SparseWriter:
    """A write-only file object for ``out`` that leaves holes where the data is zero.

    ``finish`` must be called once the stream ends: a file that ends in a hole gets its
    size only then.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pos = out.tell()
        self._written_to = self._pos
        self.hole_bytes = 0
        """Bytes skipped as holes so far."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), BLOCK_BYTES):
            piece = view[start : start + BLOCK_BYTES]
            if piece == _ZEROS[: len(piece)]:
                self.hole_bytes += len(piece)
            else:
                if self._written_to != self._pos:
                    self._out.seek(self._pos)
                self._out.write(piece)
                self._written_to = self._pos + len(piece)
            self._pos += len(piece)
        return len(view)

    def skip(self, n: int) -> None:
        """The next ``n`` bytes are a hole (known without reading them)."""
        self._pos += n
        self.hole_bytes += n

    def flush(self) -> None:
        self._out.flush()

    def finish(self) -> None:
        """Give the file its full size (the trailing hole, if any)."""
        if self._written_to != self._pos:
            self._out.truncate(self._pos)
        self._out.flush()
