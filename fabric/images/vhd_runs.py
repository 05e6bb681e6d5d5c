"""Coalesce guest bytes into modest runs and drop the all-zero parts.

Theory of operation
-------------------
Readers learn guest bytes in whatever pieces the uploader's chunks happen to cut: one
byte at a time or megabytes at once. ``RunBuffer`` evens that out:

* a piece of at least ``GATHER_BYTES`` leaves as views of itself (no copy), cut at
  guest offsets that are multiples of ``max_run_bytes`` (runs stay modest);
* smaller pieces are gathered (copied) while they continue one another, and leave as one
  run once ``GATHER_BYTES`` are together, at a jump in guest offsets, or at ``flush``
  (end of file), so a trickle of tiny chunks does not become a flood of tiny runs.

Either way the bytes are cut into ``granule_bytes`` granules aligned to guest offsets;
granules that hold only zeros are dropped (a hole reads as zeros anyway), the others
leave as maximal runs. Memory is bounded by ``GATHER_BYTES``.

Shared by the VHD, VHDX, VMDK and raw readers.
"""

from __future__ import annotations

from collections.abc import Iterator

from fabric.images.base import ZERO_BLOCK, KiB, MiB, Run, RunData, is_zero

RUN_BYTES = 1 * MiB
"""Largest run handed out; the contract asks for modest runs (about 1 MiB at most)."""
ZERO_GRANULE_BYTES = 4096
"""All-zero granules of this size (aligned to guest offsets) are left out as holes."""
GATHER_BYTES = 64 * KiB
"""Pieces shorter than this are gathered into one run; longer ones pass as views."""


class RunBuffer:
    """Accumulates contiguous guest bytes; hands out non-zero runs of bounded size."""

    def __init__(
        self, max_run_bytes: int = RUN_BYTES, granule_bytes: int = ZERO_GRANULE_BYTES
    ) -> None:
        assert max_run_bytes > 0 and 0 < granule_bytes <= len(ZERO_BLOCK)
        self._max = max_run_bytes
        self._granule = granule_bytes
        self._gather = min(GATHER_BYTES, max_run_bytes)
        self._start = 0
        self._buf = bytearray()

    def add(self, offset: int, data: RunData) -> Iterator[Run]:
        """Take guest bytes ``data`` at guest ``offset``; yield the runs this completes.

        ``data`` may be kept as a view: it must be bytes, or a view of bytes, that
        nobody changes.
        """
        view = memoryview(data)
        if self._buf:
            if offset != self._start + len(self._buf):
                yield from self.flush()
            else:
                take = min(len(view), self._gather - len(self._buf))
                self._buf += view[:take]
                offset, view = offset + take, view[take:]
                if len(self._buf) >= self._gather:
                    yield from self.flush()
        if not view:
            return
        if len(view) < self._gather:
            self._start = offset
            self._buf += view
            return
        yield from _nonzero_runs(offset, view, self._granule, self._max)

    def flush(self) -> Iterator[Run]:
        """Release everything buffered (as runs without their all-zero granules)."""
        if not self._buf:
            return
        buf, start = bytes(self._buf), self._start
        self._buf = bytearray()
        yield from _nonzero_runs(start, memoryview(buf), self._granule, self._max)


def _nonzero_runs(start: int, view: memoryview, granule: int, max_run: int) -> Iterator[Run]:
    """Runs covering ``view`` (guest bytes at ``start``) minus its all-zero granules."""
    size = len(view)
    if is_zero(view):
        return
    run_from = -1  # index where the current non-zero stretch began, -1 for none
    pos = 0
    while pos < size:
        # granules are aligned to guest offsets, so the first one may be short
        end = min(size, pos + granule - (start + pos) % granule)
        zero = ZERO_BLOCK.startswith(view[pos:end])
        if zero and run_from >= 0:
            yield from _cut(start + run_from, view[run_from:pos], max_run)
            run_from = -1
        elif not zero and run_from < 0:
            run_from = pos
        pos = end
    if run_from >= 0:
        yield from _cut(start + run_from, view[run_from:], max_run)


def _cut(start: int, view: memoryview, max_run: int) -> Iterator[Run]:
    """``view`` at guest ``start`` as runs that end at multiples of ``max_run``."""
    pos = 0
    while pos < len(view):
        end = min(len(view), pos + max_run - (start + pos) % max_run)
        yield Run(start + pos, view[pos:end])
        pos = end
