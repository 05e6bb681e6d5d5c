"""Source chunks in, whole vdisk extents out: the image ingest's work off the event loop.

Theory of operation
-------------------
``Decoder`` owns one upload's format reader and an ``ExtentAssembler``. It is fed the
source in chunks and stepped a bounded amount of reader output at a time (so a chunk of
highly compressed clusters never expands at once); each step returns the extent batches
and late runs that became ready. It runs in a worker thread; the caller stores what a
step returns while the next step decodes.

``ExtentAssembler`` turns runs (guest offset, bytes), which readers hand out in roughly
ascending order, into extents of ``extent_bytes``:

* *Pieces, not copies.* The part of a run that falls into an extent is kept as a view.
  When the extent is settled, its pieces are joined into one bytes object, the gaps
  filled with zeros: the one copy of the whole path. An extent that is a single bytes
  object of the right size leaves without any copy.
* *The window.* Runs may land slightly out of order (qemu-img writes with parallel
  coroutines), never far: an extent is *settled* once it lies more than
  ``reorder_extents`` behind the newest extent touched, or at ``finish``. A piece for a
  settled extent still waiting for its batch is merged into it (a copy, for a rare
  case); a piece for an extent already handed out is *late*: it is handed back as it
  is, for the caller to merge into the stored extent.
* *Batches.* Settled extents leave in batches of consecutive indexes, up to
  ``batch_extents`` long; a gap of at most ``bridge_extents`` untouched (so all-zero)
  extents between two settled ones is bridged with zero extents, which the vdisk stores
  as holes, so a disk of data and short holes still goes out in long batches.
* *Pins.* A view keeps the whole buffer it was cut from (a fed chunk, an inflated
  cluster) alive. Each pinned buffer is counted once; past ``pin_limit_bytes`` the
  pending extents are copied into buffers of their own, which unpins everything. So a
  hostile image that scatters its clusters costs at most the window plus the limit.

Memory: ``reorder_extents + 1`` pending extents and their pins, at most
``batch_extents + bridge_extents`` settled extents waiting for their batch, and what one
step produced (``pull_bytes``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

from fabric.images.base import (
    ZERO_BLOCK,
    ImageError,
    ImageReader,
    ReaderLimits,
    Run,
    RunData,
    Spill,
)
from fabric.images.declared import check_chosen, check_final
from fabric.images.detect import HEAD_BYTES, sniff


@dataclass(frozen=True, slots=True)
class ExtentBatch:
    """Whole extents ``first``, ``first + 1``, ...; all-zero ones are holes."""

    first: int
    extents: list[bytes]


@dataclass(slots=True)
class _Pending:
    """An extent being filled: views of its pieces, or (once compacted) its own buffer."""

    pieces: list[tuple[int, memoryview]] = field(default_factory=list)
    buf: bytearray | None = None


class ExtentAssembler:
    """Runs in, batches of whole extents out (see the module docstring)."""

    def __init__(
        self,
        extent_bytes: int,
        size_bytes: int,
        reorder_extents: int,
        batch_extents: int,
        bridge_extents: int,
        pin_limit_bytes: int,
    ) -> None:
        assert extent_bytes > 0 and batch_extents > 0 and reorder_extents >= 0
        self.extent_bytes = extent_bytes
        self.size_bytes = size_bytes
        self._reorder = reorder_extents
        self._batch = batch_extents
        self._bridge = bridge_extents
        self._pin_limit = pin_limit_bytes
        self._pending: dict[int, _Pending] = {}
        self._settled: dict[int, bytes] = {}
        self._settled_below = 0
        """Every extent below this index is settled: handed out, waiting, or a hole."""
        self._handed_below = 0
        """Every extent below this index has been handed out (or left a hole for good)."""
        self._newest = -1
        self._pins: dict[int, list[int]] = {}  # id(buffer) -> [its bytes, pieces cut from it]
        self._pinned_bytes = 0
        self._late: list[Run] = []

    @property
    def pinned_bytes(self) -> int:
        return self._pinned_bytes

    def add(self, run: Run) -> None:
        """Take a run; its pieces for settled extents become late runs."""
        e = self.extent_bytes
        view = memoryview(run.data)
        pos = run.offset
        while view:
            index, inner = divmod(pos, e)
            n = min(len(view), e - inner)
            if index < self._handed_below:
                self._late.append(Run(pos, view[:n]))
            elif index < self._settled_below:
                self._amend(index, inner, view[:n])
            else:
                self._put(index, inner, view[:n])
            pos += n
            view = view[n:]
        self._newest = max(self._newest, (run.offset + len(run.data) - 1) // e)
        self._settle(self._newest - self._reorder)
        if self._pinned_bytes > self._pin_limit:
            self._compact()

    def take(self, final: bool = False) -> tuple[list[ExtentBatch], list[Run]]:
        """The batches ready to store, and the late runs, since the last call.

        ``final``: the source has ended; everything left goes out.
        """
        if final:
            self._settle(max(self._pending, default=-1) + 1)
        late, self._late = self._late, []
        return self._batches(final), late

    # -- internals ---------------------------------------------------------------------

    def _put(self, index: int, inner: int, piece: memoryview) -> None:
        pending = self._pending.get(index)
        if pending is None:
            pending = self._pending[index] = _Pending()
        if pending.buf is not None:
            pending.buf[inner : inner + len(piece)] = piece
            return
        pending.pieces.append((inner, piece))
        self._pin(piece)

    def _amend(self, index: int, inner: int, piece: memoryview) -> None:
        """A piece for a settled extent not handed out yet (rare: copies the extent)."""
        old = self._settled.get(index)
        buf = bytearray(self._extent_len(index)) if old is None else bytearray(old)
        buf[inner : inner + len(piece)] = piece
        self._settled[index] = bytes(buf)

    def _pin(self, piece: memoryview) -> None:
        owner = piece.obj
        entry = self._pins.get(id(owner))
        if entry is None:
            self._pins[id(owner)] = [memoryview(owner).nbytes, 1]
            self._pinned_bytes += memoryview(owner).nbytes
        else:
            entry[1] += 1

    def _unpin(self, piece: memoryview) -> None:
        key = id(piece.obj)
        entry = self._pins[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._pins[key]
            self._pinned_bytes -= entry[0]

    def _settle(self, below: int) -> None:
        """Settle every extent with index < ``below``."""
        if below <= self._settled_below:
            return
        for index in sorted(i for i in self._pending if i < below):
            self._settled[index] = self._join(index, self._pending.pop(index))
        self._settled_below = below

    def _extent_len(self, index: int) -> int:
        return min(self.extent_bytes, self.size_bytes - index * self.extent_bytes)

    def _join(self, index: int, pending: _Pending) -> bytes:
        length = self._extent_len(index)
        if pending.buf is not None:
            return bytes(memoryview(pending.buf)[:length])
        pieces = sorted(pending.pieces, key=lambda p: p[0])
        for _, piece in pieces:
            self._unpin(piece)
        if len(pieces) == 1:
            inner, piece = pieces[0]
            owner = piece.obj
            if inner == 0 and type(owner) is bytes and len(owner) == length == len(piece):
                return owner
        parts: list[RunData] = []
        at = 0
        for inner, piece in pieces:
            if inner > at:
                parts.append(_zeros(inner - at))
            parts.append(piece)
            at = inner + len(piece)
        if at < length:
            parts.append(_zeros(length - at))
        joined = b"".join(parts)
        if len(joined) != length:
            raise AssertionError(f"extent {index}: pieces overlap or overrun ({len(joined)})")
        return joined

    def _compact(self) -> None:
        """Copy every pending extent into a buffer of its own: no view pins anything."""
        for index, pending in self._pending.items():
            if pending.buf is not None:
                continue
            buf = bytearray(self.extent_bytes)
            for inner, piece in pending.pieces:
                buf[inner : inner + len(piece)] = piece
                self._unpin(piece)
            pending.pieces = []
            pending.buf = buf
            assert index >= self._settled_below
        assert self._pinned_bytes == 0 and not self._pins, "pins outlived their pieces"

    def _batches(self, final: bool) -> list[ExtentBatch]:
        """Runs of settled extents, short gaps bridged, that can grow no longer."""
        out: list[ExtentBatch] = []
        ready = sorted(self._settled)
        while ready:
            first = ready[0]
            group = [first]
            for index in ready[1:]:
                if index - group[-1] - 1 > self._bridge or index - first >= self._batch:
                    break
                group.append(index)
            last = group[-1]
            # The group is complete if a later settled extent is not in it, or if no
            # extent settled from now on (index >= settled_below) could join it.
            can_grow = (
                len(group) == len(ready)
                and self._settled_below - last - 1 <= self._bridge
                and self._settled_below - first < self._batch
            )
            if can_grow and not final:
                break
            ready = ready[len(group) :]
            extents = [
                self._settled.pop(i) if i in self._settled else _zero_extent(self._extent_len(i))
                for i in range(first, last + 1)
            ]
            out.append(ExtentBatch(first, extents))
            self._handed_below = last + 1
        return out


def _zeros(n: int) -> RunData:
    return memoryview(ZERO_BLOCK)[:n] if n <= len(ZERO_BLOCK) else bytes(n)


@functools.lru_cache(maxsize=4)
def _zero_extent(n: int) -> bytes:
    """An all-zero extent, shared: the vdisk stores it as a hole and copies nothing."""
    return bytes(n)


@dataclass(frozen=True, slots=True)
class Step:
    """What one bounded step of decoding produced."""

    batches: list[ExtentBatch]
    late: list[Run]
    more: bool
    """The step stopped at its budget: step again before feeding more."""


class Decoder:
    """One upload's format detection, reader and assembler (see the module docstring).

    Not thread-safe: one step at a time, which the ingest guarantees by awaiting each.
    """

    def __init__(
        self,
        limits: ReaderLimits,
        spill: Spill,
        extent_bytes: int,
        reorder_extents: int,
        batch_extents: int,
        bridge_extents: int,
        pin_limit_bytes: int,
        allowed: frozenset[str] | None = None,
    ) -> None:
        """``allowed``: the formats the content may have (declared.py); None for any."""
        self.limits = limits
        self.allowed = allowed
        self.spill = spill
        self.reader: ImageReader | None = None
        self.assembler: ExtentAssembler | None = None
        self._geometry = (extent_bytes, reorder_extents, batch_extents, bridge_extents)
        self._pin_limit = pin_limit_bytes
        self._head = bytearray()
        self._runs: Iterator[Run] = iter(())
        self._final = False
        self._more = False

    @property
    def size_bytes(self) -> int | None:
        """The vdisk size the extents are cut for, once the first run has been seen."""
        return None if self.assembler is None else self.assembler.size_bytes

    def feed(self, chunks: list[bytes]) -> None:
        """Queue the next source chunks; ``step`` decodes them."""
        assert not self._more, "the previous chunks are not decoded yet"
        self._runs = self._feed_all(chunks)

    def finish(self) -> None:
        """The source has ended; ``step`` drains the reader."""
        assert not self._more, "the previous chunks are not decoded yet"
        self._runs = self._finish()
        self._final = True

    def step(self, budget_bytes: int) -> Step:
        """Decode until ``budget_bytes`` of runs came out or the queued input is used up."""
        produced = 0
        more = False
        for run in self._runs:
            self._assembler().add(run)
            produced += len(run.data)
            if produced >= budget_bytes:
                more = True
                break
        self._more = more
        final = self._final and not more
        if self.assembler is None:
            return Step([], [], more)
        batches, late = self.assembler.take(final)
        return Step(batches, late, more)

    def _feed_all(self, chunks: list[bytes]) -> Iterator[Run]:
        for chunk in chunks:
            if self.reader is not None:
                yield from self.reader.feed(chunk)
                continue
            self._head += chunk
            cls = sniff(bytes(self._head[:HEAD_BYTES]), at_eof=False)
            if cls is not None:
                check_chosen(self.allowed, cls)
                self.reader = cls(self.limits, self.spill)
                head, self._head = bytes(self._head), bytearray()
                yield from self.reader.feed(head)

    def _finish(self) -> Iterator[Run]:
        if self.reader is None:
            if not self._head:
                raise ImageError("the image is empty")
            cls = sniff(bytes(self._head), at_eof=True)
            assert cls is not None, "sniff decides at the end of the file"
            check_chosen(self.allowed, cls)
            self.reader = cls(self.limits, self.spill)
            head, self._head = bytes(self._head), bytearray()
            yield from self.reader.feed(head)
        yield from self.reader.finish()
        check_final(self.allowed, self.reader)

    def _assembler(self) -> ExtentAssembler:
        if self.assembler is None:
            assert self.reader is not None, "runs come from a reader"
            # A raw source tells its size only at its end: until then the vdisk is as
            # large as the limit allows (thin: it costs nothing) and is resized then.
            size = self.reader.virtual_size
            size = max(1, self.limits.max_virtual_bytes if size is None else size)
            extent, reorder, batch, bridge = self._geometry
            self.assembler = ExtentAssembler(extent, size, reorder, batch, bridge, self._pin_limit)
        return self.assembler
