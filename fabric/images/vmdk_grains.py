"""Uncompressed grains of a monolithicSparse extent, picked out of the file as it streams by.

Once every grain table is known, the allocated grains are a list of packed
``(file sector, grain index)`` sorted by file position. The reader hands this object every
file byte that is not metadata, in increasing file order (the spilled bytes first, then
the live stream); a cursor walks the sorted list, gathers each grain's bytes and yields
it as ``(guest offset, data)``. A grain whose bytes do not all arrive here -- because it
overlaps the header, the descriptor or a table, or another grain -- is refused: the bytes
it needed went elsewhere. Memory: the list (8 bytes a grain) and one grain being gathered.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from fabric.images.base import ImageError, RunData
from fabric.images.vmdk_header import SECTOR_BYTES, SparseHeader
from fabric.images.vmdk_tables import unpack


class SparseGrains:
    """A cursor over the sorted grain list, fed file bytes in order."""

    def __init__(self, header: SparseHeader, grains: array[int]) -> None:
        self._header = header
        self._grains = grains
        self._next = 0
        self._start = 0  # file offset of the grain being gathered
        self._index = -1  # its grain index; -1: none
        self._need = 0
        self._buf = bytearray()
        self._last_end = 0  # file offset just past the last grain gathered
        self._last_guest = 0  # and its guest offset

    def feed(self, offset: int, data: bytes | memoryview) -> Iterator[tuple[int, RunData]]:
        """Consume file bytes ``data`` at ``offset``; yield completed grains.

        A grain that lies whole in ``data`` leaves as a view of it: ``data`` must be
        bytes, or a view of bytes, that nobody changes.
        """
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._index < 0:
                start = self._next_start()
                if start is None or start >= offset + len(view):
                    return
                self._begin()
                if start < offset + pos:
                    raise self._overlap_error()
                pos = start - offset  # skip padding and redundant tables before it
                continue
            if offset + pos != self._start + len(self._buf):
                raise self._overlap_error()
            if not self._buf and len(view) - pos >= self._need:
                grain: RunData = view[pos : pos + self._need]
                pos += self._need
            else:
                take = min(len(view) - pos, self._need - len(self._buf))
                self._buf += view[pos : pos + take]
                pos += take
                if len(self._buf) < self._need:
                    continue
                grain = bytes(self._buf)
                self._buf.clear()
            yield self._guest_offset(), grain
            self._last_end, self._last_guest = self._start + self._need, self._guest_offset()
            self._index = -1

    def finish(self, end_bytes: int) -> None:
        """The file ended at ``end_bytes``: refuse if a grain is still incomplete."""
        if self._index < 0:
            if self._next_start() is None:
                return
            self._begin()
        if self._start + len(self._buf) < end_bytes:
            raise self._overlap_error()
        raise ImageError(
            f"vmdk: the grain for guest offset {self._guest_offset()} is stored at "
            f"file byte {self._start}, past the end of the file ({end_bytes} bytes): "
            "truncated"
        )

    def _next_start(self) -> int | None:
        if self._next >= len(self._grains):
            return None
        sector, _ = unpack(self._grains[self._next])
        return sector * SECTOR_BYTES

    def _begin(self) -> None:
        sector, index = unpack(self._grains[self._next])
        self._next += 1
        self._start = sector * SECTOR_BYTES
        self._index = index
        self._need = self._header.grain_needed_bytes(index)
        self._buf.clear()

    def _guest_offset(self) -> int:
        return self._index * self._header.grain_bytes

    def _overlap_error(self) -> ImageError:
        where = (
            f"vmdk: the grain for guest offset {self._guest_offset()} at file byte {self._start}"
        )
        if self._start < self._last_end:
            return ImageError(
                f"{where} overlaps the grain for guest offset {self._last_guest} "
                "(a grain referenced twice?)"
            )
        return ImageError(f"{where} overlaps the header, descriptor or grain tables")
