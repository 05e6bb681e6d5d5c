"""Streaming, sans-I/O qcow2 reader: qcow2 bytes in, raw guest runs out.

Theory of operation
-------------------
A qcow2 file is a header cluster, an L1 table naming L2 tables, L2 tables mapping guest
clusters to host clusters, and the host clusters themselves (plus refcounts, snapshots and
bitmaps, which a reader ignores). qemu usually writes every table before the data it maps,
but the format allows any order, and we see the file once, front to back.

1. *Header.* Bytes are buffered until ``parse_header`` has the header and its extensions
   (at most the first cluster). Everything we refuse from the header alone is refused then.
   The buffered bytes are then routed like all later ones; cluster 0 is skipped.
2. *Routing.* Each file byte belongs to the header cluster, the active L1 table, the one
   L2 table or data run being read (the "owner" of its clusters), compressed clusters in
   flight, or a gap. ``HostPlan`` holds what the decoded tables say lies ahead, ordered by
   host offset; items are activated when the stream reaches their first byte, which is
   also where overlapping claims (a cluster used twice, an L2 table that is also data) are
   refused. Fed chunks are cut at cluster boundaries and at the next item's start, so a
   piece of input always has exactly one role.
3. *L1.* Entries are collected as they arrive; only the ones covering the virtual disk are
   kept, as a dict of L2 table offset -> L1 index (duplicates are a loop: refused). When
   the L1 table is complete, every L2 table behind us is read from the spill area and the
   ones ahead go into the plan.
4. *L2.* A table is buffered (one cluster) and decoded when complete. Each mapping behind
   us is satisfied from the spill area at once, each mapping ahead goes into the plan.
   Standard data is emitted straight from the input as it passes; a compressed cluster is
   buffered (at most two clusters) and inflated when its last byte has arrived.
5. *Spill.* Until the L1 table and every L2 table it names have been read, a gap cluster
   might still turn out to be an L2 table or mapped data, so whole gap clusters are put in
   the spill area keyed by file offset (bounded by ``max_spill_bytes``). Once the last L2
   table is read, the spill area is emptied and gaps are skipped: nothing can map them.
   With qemu's usual layout only the refcount clusters before the L1 table are spilled.
6. *Finish.* Anything still expected past the end of the file (an L2 table, a data
   cluster, the tail of the L1 table) is refused as truncated, although qemu would read
   zeros there. A compressed cluster cut short by the end of the file is accepted if its
   compressed stream is complete, as qemu does.

Memory stays bounded for every input: the header buffer by the cluster size and
``max_header_bytes``; L1 references, pending mappings and table/compressed buffers by
``max_metadata_bytes`` (``MetadataBudget``); early data by ``max_spill_bytes``; emitted
runs by ``RUN_MAX_BYTES``. All-zero runs are not emitted (they read as zeros anyway).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from fabric.images.base import (
    ImageError,
    ImageReader,
    MetadataBudget,
    ReaderLimits,
    Run,
    Spill,
    frozen_bytes,
)
from fabric.images.qcow2_codec import ClusterInflater
from fabric.images.qcow2_header import MAGIC, Header, parse_header
from fabric.images.qcow2_plan import ITEM_COST_BYTES, HostPlan, describe
from fabric.images.qcow2_runs import RUN_MAX_BYTES, guest_runs, needed_end, stored_runs
from fabric.images.qcow2_spill import ClusterShelf
from fabric.images.qcow2_tables import (
    DataRun,
    Item,
    Packed,
    TableRef,
    decode_l2,
    table_ref,
)

_L1_ENTRY = struct.Struct(">Q")


def sniff(head: bytes) -> bool:
    """True if ``head`` (the first bytes of a file) starts with the qcow2 magic."""
    return head[: len(MAGIC)] == MAGIC


@dataclass(slots=True)
class _Inflight:
    """A compressed cluster whose bytes are arriving."""

    item: Packed
    data: bytearray = field(default_factory=bytearray)

    @property
    def complete(self) -> bool:
        return len(self.data) >= self.item.length


class Qcow2Reader(ImageReader):
    """qcow2 (versions 2 and 3) to raw; see the module docstring."""

    format = "qcow2"

    def __init__(self, limits: ReaderLimits, spill: Spill) -> None:
        super().__init__(limits, spill)
        self._head = bytearray()
        self._header: Header | None = None
        self._inflater: ClusterInflater | None = None
        self._at = 0
        """File offset of the next byte to route (the header buffer is routed late)."""
        self._budget = MetadataBudget(self.format, limits.max_metadata_bytes)
        self._plan = HostPlan(self._budget)
        self._l1_partial = bytearray()
        self._l1_count = 0
        self._l1_done = False
        self._tables: dict[int, TableRef] = {}
        self._tables_left = 0
        """L2 tables named by L1 and not read yet (known once L1 is complete)."""
        self._owner: TableRef | DataRun | None = None
        self._table_buf = bytearray()
        self._inflight: list[_Inflight] = []
        self._clusters: ClusterShelf | None = None
        """Gap clusters kept in the spill area (once the cluster size is known)."""

    @property
    def virtual_size(self) -> int | None:
        return self._header.virtual_bytes if self._header else None

    # -- the two entry points ------------------------------------------------------------

    def feed(self, data: bytes) -> Iterator[Run]:
        self.position += len(data)
        view = memoryview(frozen_bytes(data))
        if self._header is None:
            view = self._take_header(view)
            if self._header is None:
                return
            head, self._head = bytes(self._head), bytearray()
            yield from self._route(memoryview(head))
        yield from self._route(view)

    def finish(self) -> Iterator[Run]:
        if self._header is None:
            self._take_header(memoryview(b""))
            if self._header is None:
                raise ImageError(
                    f"qcow2: file ends after {len(self._head)} bytes, before the header is complete"
                )
            head, self._head = bytes(self._head), bytearray()
            yield from self._route(memoryview(head))
        header = self._hdr
        if not self._l1_done:
            raise ImageError(
                f"qcow2: truncated: file ends at {self._at:#x}, before the end of the "
                f"L1 table at [{header.l1_offset:#x}, {header.l1_end:#x})"
            )
        self._check_owner_complete()
        for inflight in self._inflight:
            yield from self._emit_truncated_packed(inflight)
        self._inflight.clear()
        pending = self._plan.first()
        if pending is not None:
            raise ImageError(
                f"qcow2: truncated: {describe(pending)} lies past the end of the file "
                f"({self._at} bytes)"
            )

    # -- header --------------------------------------------------------------------------

    def _take_header(self, view: memoryview) -> memoryview:
        """Buffer header bytes until the header parses; return the unused rest of ``view``."""
        while True:
            parsed = parse_header(bytes(self._head), self.limits)
            if isinstance(parsed, Header):
                self._start(parsed)
                return view
            if not view:
                return view
            take = parsed - len(self._head)
            self._head += view[:take]
            view = view[take:]

    def _start(self, header: Header) -> None:
        self._header = header
        self._inflater = ClusterInflater(header.compression, header.cluster_bytes)
        self._clusters = ClusterShelf(self.spill, self.limits.max_spill_bytes, header.cluster_bytes)
        if header.l1_needed == 0:
            self._l1_done = True

    # -- routing -------------------------------------------------------------------------

    def _route(self, view: memoryview) -> Iterator[Run]:
        while view:
            pos = self._at
            self._activate(pos)
            n = self._piece_len(pos, len(view))
            yield from self._consume(pos, view[:n])
            view = view[n:]
            self._at = pos + n
            yield from self._settle(pos + n)

    def _activate(self, pos: int) -> None:
        for item in self._plan.due(pos):
            if isinstance(item, Packed):
                self._budget.charge(item.length, "a compressed cluster buffer")
                self._inflight.append(_Inflight(item))
                continue
            assert self._owner is None, "plan handed out overlapping clusters"
            self._owner = item
            if isinstance(item, TableRef):
                self._budget.charge(item.length, "an L2 table buffer")

    def _piece_len(self, pos: int, available: int) -> int:
        """How much input from ``pos`` has one role: up to the next cluster or item."""
        cluster = self._cluster_bytes
        limit = (pos // cluster + 1) * cluster
        owner = self._owner
        if isinstance(owner, DataRun) and owner.mask is None:
            limit = min(owner.end, pos + RUN_MAX_BYTES)
        upcoming = self._plan.next_start()
        if upcoming is not None and upcoming > pos:
            limit = min(limit, upcoming)
        return min(available, limit - pos)

    def _consume(self, pos: int, piece: memoryview) -> Iterator[Run]:
        if pos < self._cluster_bytes:
            return  # the header cluster
        if self._in_l1(pos):
            self._collect_l1(pos, piece)
            return
        owner = self._owner
        if isinstance(owner, TableRef):
            self._table_buf += piece
        elif isinstance(owner, DataRun):
            yield from self._stored(owner, pos, piece)
        else:
            self._feed_inflight(pos, piece)
            if self._spilling:
                self._shelf().stage(piece)

    def _settle(self, end: int) -> Iterator[Run]:
        """Complete whatever ends at file offset ``end``."""
        owner = self._owner
        if owner is not None and end >= owner.end:
            self._owner = None
            if isinstance(owner, TableRef):
                yield from self._finish_table(owner)
        self._shelf().seal(end)
        yield from self._finish_inflight()
        if not self._l1_done and end >= self._hdr.l1_end:
            yield from self._finish_l1()

    # -- L1 and L2 tables ----------------------------------------------------------------

    def _in_l1(self, pos: int) -> bool:
        header = self._hdr
        return header.l1_needed > 0 and header.l1_offset <= pos < header.l1_region_end

    def _collect_l1(self, pos: int, piece: memoryview) -> None:
        header = self._hdr
        lo, hi = max(pos, header.l1_offset), min(pos + len(piece), header.l1_end)
        if self._l1_done or lo >= hi:
            return
        self._l1_partial += piece[lo - pos : hi - pos]
        whole = len(self._l1_partial) // _L1_ENTRY.size * _L1_ENTRY.size
        for (entry,) in _L1_ENTRY.iter_unpack(self._l1_partial[:whole]):
            self._add_l1_entry(entry)
        del self._l1_partial[:whole]

    def _add_l1_entry(self, entry: int) -> None:
        index = self._l1_count
        self._l1_count += 1
        ref = table_ref(entry, index, self._hdr)
        if ref is None:
            return
        self._check_placement(ref)
        twin = self._tables.get(ref.host)
        if twin is not None:
            raise ImageError(
                f"qcow2: L2 table at {ref.host:#x} is referenced twice "
                f"(L1 entries {twin.l1_index} and {index})"
            )
        self._budget.charge(ITEM_COST_BYTES, "the L1 table")
        self._tables[ref.host] = ref

    def _finish_l1(self) -> Iterator[Run]:
        self._l1_done = True
        tables = sorted(self._tables.values(), key=lambda ref: ref.host)
        self._budget.release(ITEM_COST_BYTES * len(tables))
        self._tables = {}
        self._tables_left = len(tables)
        for ref in tables:
            yield from self._place(ref)
        self._stop_spilling_if_done()

    def _finish_table(self, ref: TableRef) -> Iterator[Run]:
        table, self._table_buf = bytes(self._table_buf), bytearray()
        self._budget.release(ref.length)
        yield from self._read_table(ref, table)
        self._stop_spilling_if_done()

    def _read_table(self, ref: TableRef, table: bytes) -> Iterator[Run]:
        self._tables_left -= 1
        for item in decode_l2(table, ref, self._hdr):
            self._check_placement(item)
            yield from self._place(item)

    def _check_placement(self, item: Item) -> None:
        """Refuse an item inside the header cluster or the L1 table."""
        header = self._hdr
        if item.host < header.cluster_bytes:
            raise ImageError(f"qcow2: {describe(item)} points inside the header cluster")
        if header.l1_needed and item.host < header.l1_region_end and item.end > header.l1_offset:
            raise ImageError(
                f"qcow2: {describe(item)} overlaps the L1 table at "
                f"[{header.l1_offset:#x}, {header.l1_region_end:#x})"
            )

    def _place(self, item: Item) -> Iterator[Run]:
        """Satisfy an item from the spill area if it lies behind us, else plan for it."""
        if item.host >= self._at:
            self._plan.push(item)
        elif item.end <= self._at:
            yield from self._from_spill(item)
        else:
            raise ImageError(
                f"qcow2: {describe(item)} overlaps the table that ends at {self._at:#x}"
            )

    # -- the spill area ------------------------------------------------------------------

    @property
    def _spilling(self) -> bool:
        """Could a gap cluster still be mapped by a table we have not read?"""
        return not self._l1_done or self._tables_left > 0

    def _stop_spilling_if_done(self) -> None:
        if self._spilling:
            return
        self._shelf().drop_all()

    def _from_spill(self, item: Item) -> Iterator[Run]:
        cluster = self._cluster_bytes
        if isinstance(item, TableRef):
            yield from self._read_table(item, self._shelf().take(item, item.host))
        elif isinstance(item, DataRun):
            for host in range(item.host, item.end, cluster):
                data = memoryview(self._shelf().take(item, host))
                yield from self._stored(item, host, data)
        else:
            first = item.host - item.host % cluster
            keys = range(first, item.end, cluster)
            joined = b"".join(self._shelf().take(item, key, keep=True) for key in keys)
            start = item.host - first
            yield from self._emit_packed(item, joined[start : start + item.length])

    # -- data ----------------------------------------------------------------------------

    def _feed_inflight(self, pos: int, piece: memoryview) -> None:
        for inflight in self._inflight:
            lo = max(pos, inflight.item.host)
            hi = min(pos + len(piece), inflight.item.end)
            if lo < hi:
                inflight.data += piece[lo - pos : hi - pos]

    def _finish_inflight(self) -> Iterator[Run]:
        if not any(inflight.complete for inflight in self._inflight):
            return
        done = [inflight for inflight in self._inflight if inflight.complete]
        self._inflight = [inflight for inflight in self._inflight if not inflight.complete]
        for inflight in done:
            self._budget.release(inflight.item.length)
            yield from self._emit_packed(inflight.item, bytes(inflight.data))

    def _emit_truncated_packed(self, inflight: _Inflight) -> Iterator[Run]:
        """A compressed cluster cut by the end of the file: fine if it still inflates."""
        try:
            yield from self._emit_packed(inflight.item, bytes(inflight.data))
        except ImageError as exc:
            reason = str(exc).removeprefix("qcow2: ")
            raise ImageError(
                f"qcow2: truncated: file ends inside {describe(inflight.item)}: {reason}"
            ) from None

    def _emit_packed(self, item: Packed, data: bytes) -> Iterator[Run]:
        assert self._inflater is not None
        cluster = self._inflater.inflate(data, item.host)
        yield from guest_runs(item.guest, memoryview(cluster), self._hdr.virtual_bytes)

    def _check_owner_complete(self) -> None:
        """At the end of the file: the run or table being read must not be cut short."""
        owner = self._owner
        if owner is None:
            return
        if isinstance(owner, TableRef) or needed_end(owner, self._hdr.virtual_bytes) > self._at:
            raise ImageError(
                f"qcow2: truncated: file ends at {self._at:#x} inside {describe(owner)}"
            )

    # -- shorthands ----------------------------------------------------------------------

    @property
    def _hdr(self) -> Header:
        assert self._header is not None, "used before the header was parsed"
        return self._header

    def _stored(self, run: DataRun, pos: int, piece: memoryview) -> Iterator[Run]:
        return stored_runs(run, pos, piece, self._cluster_bytes, self._hdr.virtual_bytes)

    def _shelf(self) -> ClusterShelf:
        assert self._clusters is not None, "used before the header was parsed"
        return self._clusters

    @property
    def _cluster_bytes(self) -> int:
        return self._hdr.cluster_bytes
