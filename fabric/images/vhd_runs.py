"""Coalesce guest bytes into modest runs and drop the all-zero parts.

Theory of operation
-------------------
Readers learn guest bytes in whatever pieces the uploader's chunks happen to cut: one
byte at a time or megabytes at once. ``RunBuffer`` evens that out. It collects bytes
that continue the previous piece (same guest offset sequence) and releases a run when

* the next piece does not continue the buffered one (a jump in guest offsets),
* the buffer reaches ``max_run_bytes`` (runs stay modest: never the whole image), or
* the reader calls ``flush`` (end of file).

On release the buffer is cut into ``ZERO_GRANULE_BYTES`` granules aligned to guest
offsets; granules that hold only zeros are dropped (a hole reads as zeros anyway), the
others leave as maximal runs. Memory is bounded by ``max_run_bytes``.

Shared by the VHD, VHDX and raw readers.
"""

from __future__ import annotations

from collections.abc import Iterator

from fabric.images.base import MiB, Run

RUN_BYTES = 1 * MiB
"""Largest run handed out; the contract asks for modest runs (about 1 MiB at most)."""
ZERO_GRANULE_BYTES = 4096
"""All-zero granules of this size (aligned to guest offsets) are left out as holes."""


class RunBuffer:
    """Accumulates contiguous guest bytes; hands out non-zero runs of bounded size."""

    def __init__(
        self, max_run_bytes: int = RUN_BYTES, granule_bytes: int = ZERO_GRANULE_BYTES
    ) -> None:
        assert max_run_bytes > 0 and granule_bytes > 0
        self._max = max_run_bytes
        self._granule = granule_bytes
        self._start = 0
        self._buf = bytearray()

    def add(self, offset: int, data: bytes | memoryview) -> Iterator[Run]:
        """Append guest bytes ``data`` at guest ``offset``; yield the runs this completes."""
        if self._buf and offset != self._start + len(self._buf):
            yield from self.flush()
        view = memoryview(data)
        while view:
            if not self._buf:
                self._start = offset
            room = self._max - len(self._buf)
            self._buf += view[:room]
            offset += min(room, len(view))
            view = view[room:]
            if len(self._buf) >= self._max:
                yield from self.flush()

    def flush(self) -> Iterator[Run]:
        """Release everything buffered (as runs without their all-zero granules)."""
        buf, start = self._buf, self._start
        self._buf = bytearray()
        yield from _nonzero_runs(start, buf, self._granule)


def _nonzero_runs(start: int, buf: bytearray, granule: int) -> Iterator[Run]:
    """Runs covering ``buf`` (guest bytes at ``start``) minus its all-zero granules."""
    size = len(buf)
    if buf.count(0) == size:
        return
    run_from = -1  # index where the current non-zero stretch began, -1 for none
    pos = 0
    while pos < size:
        # granules are aligned to guest offsets, so the first one may be short
        end = min(size, pos + granule - (start + pos) % granule)
        zero = buf.count(0, pos, end) == end - pos
        if zero and run_from >= 0:
            yield Run(start + run_from, bytes(buf[run_from:pos]))
            run_from = -1
        elif not zero and run_from < 0:
            run_from = pos
        pos = end
    if run_from >= 0:
        yield Run(start + run_from, bytes(buf[run_from:]))
