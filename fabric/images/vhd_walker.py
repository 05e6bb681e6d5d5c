"""Route a file's bytes, seen once from offset 0, to the structures that own them.

Theory of operation
-------------------
A VHD or VHDX file is a few metadata structures (headers, tables) that say where the
data blocks are, plus the blocks. A streaming reader sees each byte once, in file order,
and must decide on arrival what it is. The ``Walker`` makes that decision from what the
format reader has told it so far:

* **wants** -- "collect bytes ``start..end`` and call me with them" (a header, a table).
  A want's callback parses the structure and usually registers further wants.
* **claims** -- "``start..end`` is metadata" (a structure's whole reserved range). Claims
  never overlap one another, and no data block may overlap a claim. Bytes inside a claim
  that nobody wants are dropped. Every want lies inside a claim.
* **the plan** -- once the tables are known, the data blocks sorted by file offset
  (``install``). From then on a byte inside a block becomes guest data, any other byte
  is dropped.

Precedence for each byte: want, then (plan installed) block or drop, then claim (drop),
else spill. Before the plan exists, a byte that is neither wanted nor claimed may be
data of a block whose table comes later, so it goes to the spill area (vhd_spill.py,
bounded by ``limits.max_spill_bytes``). Installing the plan replays the spill in file
order before any later byte. A want that starts behind the current position (a table
stored before the header that locates it) is filled from the spill the same way.

Want callbacks run between steps, never inside one, so a callback may register wants,
claims or the plan and the rest of the current chunk is routed by the new state.

A block may begin with a VHD sector bitmap (``Extent.bitmap_bytes``, read through
vhd_format.SectorMask); sectors whose bit is clear read as zeros.

At the end of the file every want must be complete and every block fully seen;
anything else means the file was truncated.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field

from fabric.images.base import ImageError, ReaderLimits, Run, Spill, frozen_bytes
from fabric.images.vhd_format import SectorMask
from fabric.images.vhd_runs import RunBuffer
from fabric.images.vhd_spill import SpillLog

MAX_FILE_OFFSET_BYTES = 1 << 50
"""1 PiB: structures or blocks said to lie beyond this are refused (no upload is that big)."""


@dataclass(frozen=True, slots=True)
class Extent:
    """One data block: where it lies in the file and which guest bytes it supplies."""

    file_offset: int
    span: int
    """Bytes the block occupies in the file (for overlap checks)."""
    guest_offset: int
    guest_length: int
    """Guest bytes it supplies, following its bitmap (0 for a block beyond the disk)."""
    bitmap_bytes: int = 0
    """Length of the sector bitmap at the start of the block (VHD), 0 for none."""

    @property
    def needed_end(self) -> int:
        """The file must extend at least this far for the block to be read."""
        return self.file_offset + self.bitmap_bytes + self.guest_length


PlanFactory = Callable[[], Iterator[Extent]]
"""Makes a fresh iterator over the blocks, sorted by file offset."""


@dataclass(slots=True)
class _Want:
    start: int
    end: int
    what: str
    done: Callable[[bytes], None]
    buf: bytearray = field(default_factory=bytearray)

    @property
    def filled_to(self) -> int:
        return self.start + len(self.buf)


@dataclass(frozen=True, slots=True, order=True)
class _Claim:
    start: int
    end: int
    what: str


class Walker:
    """The byte router shared by the VHD and VHDX readers (see the module docstring)."""

    def __init__(self, fmt: str, limits: ReaderLimits, spill: Spill) -> None:
        self.fmt = fmt
        self.limits = limits
        self.position = 0
        """File offset of the next byte to arrive."""
        self.max_span_end = 0
        """End of the furthest block span in the file, once the plan is installed."""
        self._wants: list[_Want] = []
        self._ready: list[_Want] = []
        self._claims: list[_Claim] = []
        self._runs = RunBuffer()
        self._kept = SpillLog(fmt, spill, limits.max_spill_bytes)
        self._plan: Iterator[Extent] | None = None
        self._replay_due = False
        self._ext: Extent | None = None
        self._ext_seen = 0
        self._bitmap = bytearray()
        self._mask: SectorMask | None = None

    # -- what the format reader tells us ---------------------------------------------

    def claim(self, start: int, length: int, what: str) -> None:
        """Mark ``start..start+length`` as metadata; it may not overlap another claim."""
        end = start + length
        self._check_plausible(start, end, what)
        if length == 0:
            return
        for c in self._claims:
            if start < c.end and c.start < end:
                raise ImageError(
                    f"{self.fmt}: {what} (bytes {start}..{end}) overlaps "
                    f"{c.what} (bytes {c.start}..{c.end})"
                )
        bisect.insort(self._claims, _Claim(start, end, what))

    def want(self, start: int, length: int, what: str, done: Callable[[bytes], None]) -> None:
        """Collect ``length`` bytes at ``start`` and pass them to ``done``."""
        assert self._plan is None, "no wants after the plan is installed"
        if length > self.limits.max_metadata_bytes:
            raise ImageError(
                f"{self.fmt}: {what} of {length} bytes exceeds the metadata limit of "
                f"{self.limits.max_metadata_bytes} bytes"
            )
        end = start + length
        self._check_plausible(start, end, what)
        assert length == 0 or any(c.start <= start and end <= c.end for c in self._claims), (
            f"{what} is wanted outside any claim"
        )
        w = _Want(start, end, what, done)
        if start < self.position:
            self._backfill(w)
        if w.filled_to >= w.end:
            self._ready.append(w)
        else:
            self._wants.append(w)

    def install(self, plan: PlanFactory) -> None:
        """Set the data blocks (sorted by file offset); refuses overlapping blocks."""
        assert self._plan is None and not self._wants, "install once, after all wants"
        self._validate(plan())
        self._plan = (e for e in plan() if e.needed_end > e.file_offset)
        self._next_extent()
        self._replay_due = True

    @property
    def installed(self) -> bool:
        return self._plan is not None

    # -- the byte stream ---------------------------------------------------------------

    def feed(self, data: bytes) -> Iterator[Run]:
        """Route the next bytes of the file; yield the guest runs they complete."""
        yield from self._settle()
        view = memoryview(frozen_bytes(data))
        while view:
            n = yield from self._step(view)
            view = view[n:]
            self.position += n
            yield from self._settle()

    def finish(self) -> Iterator[Run]:
        """End of file: refuse a truncated file, else yield the last runs."""
        yield from self._settle()
        if self._wants:
            w = min(self._wants, key=lambda w: w.start)
            raise ImageError(
                f"{self.fmt}: truncated: {w.what} (bytes {w.start}..{w.end}) extends past "
                f"the end of the file at {self.position} bytes"
            )
        if self._ext is not None:
            e = self._ext
            raise ImageError(
                f"{self.fmt}: truncated: the block for guest offset {e.guest_offset} (file "
                f"bytes {e.file_offset}..{e.needed_end}) extends past the end of the file at "
                f"{self.position} bytes"
            )
        yield from self._runs.flush()

    # -- internals ---------------------------------------------------------------------

    def _check_plausible(self, start: int, end: int, what: str) -> None:
        if start < 0 or end > MAX_FILE_OFFSET_BYTES:
            raise ImageError(
                f"{self.fmt}: {what} at file offset {start} lies beyond any plausible file size"
            )

    def _settle(self) -> Iterator[Run]:
        """Run the callbacks of completed wants, then replay the spill if a plan came."""
        while self._ready:
            w = self._ready.pop(0)
            w.done(bytes(w.buf))
        if self._replay_due:
            self._replay_due = False
            yield from self._replay()

    def _step(self, view: memoryview) -> Generator[Run, None, int]:
        """Route a prefix of ``view`` (at ``position``) that has one fate; return its length."""
        pos = self.position
        limit = len(view)
        covering = []
        for w in self._wants:
            if w.start <= pos < w.end:
                covering.append(w)
                limit = min(limit, w.end - pos)
            elif w.start > pos:
                limit = min(limit, w.start - pos)
        if covering:
            self._collect(covering, view[:limit])
            return limit
        if self._plan is not None:
            yield from self._route(pos, view[:limit])
            return limit
        for c in self._claims:
            if c.start <= pos < c.end:
                return min(limit, c.end - pos)  # metadata nobody wants: drop
            if c.start > pos:
                limit = min(limit, c.start - pos)
                break
        self._kept.append(pos, view[:limit])
        return limit

    def _collect(self, wants: list[_Want], piece: memoryview) -> None:
        for w in wants:
            assert w.filled_to == self.position, "want bytes arrive in order"
            w.buf += piece
            if w.filled_to == w.end:
                self._wants.remove(w)
                self._ready.append(w)

    def _validate(self, extents: Iterator[Extent]) -> None:
        """Blocks may not overlap each other or any claim, nor lie beyond any file."""
        claims, ci = self._claims, 0
        prev: Extent | None = None
        for ext in extents:
            end = ext.file_offset + ext.span
            self._check_plausible(
                ext.file_offset, end, f"the block for guest offset {ext.guest_offset}"
            )
            if prev is not None and ext.file_offset < prev.file_offset + prev.span:
                raise ImageError(
                    f"{self.fmt}: the blocks for guest offsets {prev.guest_offset} and "
                    f"{ext.guest_offset} overlap in the file (at byte {ext.file_offset})"
                )
            while ci < len(claims) and claims[ci].end <= ext.file_offset:
                ci += 1
            if ci < len(claims) and claims[ci].start < end:
                raise ImageError(
                    f"{self.fmt}: the block for guest offset {ext.guest_offset} (file bytes "
                    f"{ext.file_offset}..{end}) overlaps {claims[ci].what}"
                )
            prev = ext
            self.max_span_end = end

    def _next_extent(self) -> None:
        assert self._plan is not None
        self._ext = next(self._plan, None)
        self._ext_seen = 0
        self._bitmap = bytearray()
        self._mask = None

    def _route(self, pos: int, view: memoryview) -> Iterator[Run]:
        """Bytes at file offset ``pos`` once the plan is known: block data or dropped."""
        i, n = 0, len(view)
        while i < n and self._ext is not None:
            ext, off = self._ext, pos + i
            if off < ext.file_offset:
                i += min(n - i, ext.file_offset - off)
                continue
            assert off == ext.file_offset + self._ext_seen, "block bytes arrive in order"
            take = min(n - i, ext.needed_end - off)
            yield from self._block_bytes(ext, off - ext.file_offset, view[i : i + take])
            self._ext_seen += take
            i += take
            if off + take == ext.needed_end:
                self._next_extent()

    def _block_bytes(self, ext: Extent, rel: int, piece: memoryview) -> Iterator[Run]:
        """``piece`` lies ``rel`` bytes into block ``ext``: bitmap, then guest data."""
        if rel < ext.bitmap_bytes:
            n = min(len(piece), ext.bitmap_bytes - rel)
            self._bitmap += piece[:n]
            if len(self._bitmap) == ext.bitmap_bytes:
                self._mask = SectorMask(bytes(self._bitmap), ext.guest_length)
            piece, rel = piece[n:], rel + n
            if not piece:
                return
        data_rel = rel - ext.bitmap_bytes
        if ext.bitmap_bytes == 0:
            yield from self._runs.add(ext.guest_offset + data_rel, piece)
            return
        assert self._mask is not None
        for a, b in self._mask.present(data_rel, data_rel + len(piece)):
            yield from self._runs.add(ext.guest_offset + a, piece[a - data_rel : b - data_rel])

    def _backfill(self, w: _Want) -> None:
        """Fill the part of a want behind ``position`` from the spill, or refuse."""
        w.buf += self._kept.read(w.start, min(w.end, self.position))
        if w.filled_to < min(w.end, self.position):
            raise ImageError(
                f"{self.fmt}: {w.what} at file offset {w.start} lies in a part of the file "
                "that was already passed and not kept"
            )

    def _replay(self) -> Iterator[Run]:
        """Route the spilled bytes, in file order, now that the plan is known."""
        for key, data in self._kept.drain():
            yield from self._route(key, memoryview(data))
