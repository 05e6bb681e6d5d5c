"""Streaming, sans-I/O reader for single-file VMDK images (monolithicSparse, streamOptimized).

Theory of operation
-------------------
The file is seen once, from byte 0, in chunks of any size. A hosted sparse extent is::

    header (sector 0) | descriptor | [redundant GD + GTs] | GD | GTs | grains ...

and a stream-optimized one puts sector-aligned *markers* after ``overHead``: each grain
carries its own LBA, and the tables either precede the stream (qemu, open-vmdk) or follow
it with a footer and an end-of-stream marker (``gdOffset = GD_AT_END``).

1. **Header.** The first 512 bytes are buffered and validated (``vmdk_header``). That
   fixes the virtual size and places two *items*: the embedded descriptor and, unless it
   is at the end, the grain directory (GD). A text-only descriptor file is recognised
   and refused: it names other files we were not given.
2. **Items.** Every later byte is either part of a pending metadata item -- the
   descriptor, the GD, or the next grain table (GT) the GD named, in file order -- or it
   is *routed*. Items are gathered whole (a GD is bounded by the metadata budget, a GT is
   2 KiB) and then parsed: the descriptor must describe this one self-contained file
   (``vmdk_descriptor``); the GD yields the sorted list of GTs, checked for overlaps and
   double references (``vmdk_tables``); each GT yields grain locations.
3. **Routing.** While some table is still ahead (the *map is open*), a routed byte might
   yet turn out to be a GT or a grain, so it goes to the spill area (``vmdk_spill``);
   a GT discovered behind the current position takes its bytes back out of the spill.
   When the last GT is in, the map closes: for monolithicSparse the allocated grains are
   sorted by file position and the spill is replayed through ``SparseGrains``, which
   then receives the live stream too; for streamOptimized the spill is dropped and bytes
   from ``overHead`` on go to ``MarkerStream``, which inflates grains as they arrive and
   checks the tables against where the grain markers really were (``vmdk_markers``).
   With the tables at the front, as every real writer lays them out, the spill only ever
   holds the redundant directory; a hostile layout is bounded by ``max_spill_bytes``.
4. **Runs.** Grains come out as ``(guest offset, data)``, views of the fed bytes where
   they lie whole in one chunk (``vhd_runs.RunBuffer``): all-zero grains are dropped,
   small guest-contiguous ones are merged, no run exceeds ``RUN_MERGE_BYTES``.
5. **Finish.** Anything still expected (an item, a grain, the end-of-stream marker of a
   streamed-table image) lies past the end of the file: ImageError "truncated". qemu
   reads zeros past EOF; we refuse.

Memory stays bounded for every input: the header/descriptor (``max_header_bytes``), the
tables as ``array``s charged to ``max_metadata_bytes``, one grain being gathered or
inflated (at most 1 MiB), and the spill (``max_spill_bytes``).
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

from fabric.images.base import (
    ImageError,
    ImageReader,
    MetadataBudget,
    MiB,
    ReaderLimits,
    Run,
    RunData,
    Spill,
    UnsupportedImage,
    frozen_bytes,
)
from fabric.images.vhd_runs import RunBuffer
from fabric.images.vmdk_descriptor import (
    TEXT_DESCRIPTOR_MAX_BYTES,
    Descriptor,
    check_embedded,
    looks_like_text_descriptor,
    parse_descriptor,
    refuse_text_descriptor,
)
from fabric.images.vmdk_grains import SparseGrains
from fabric.images.vmdk_header import (
    HEADER_BYTES,
    MAGIC,
    SECTOR_BYTES,
    SparseHeader,
    check_grain_count,
    parse_header,
)
from fabric.images.vmdk_markers import MarkerStream
from fabric.images.vmdk_spill import SpillBuffer
from fabric.images.vmdk_tables import (
    PACKED_BYTES,
    allocated_grains,
    plan_grain_tables,
    sort_packed,
    table_entries,
    u32_array,
    unpack,
)

RUN_MERGE_BYTES = 1 * MiB
"""Guest-contiguous grains are merged into runs of at most this many bytes."""
TABLE_BATCH = 4096
"""Grain tables found behind the stream are taken out of the spill this many at a time."""


def sniff(head: bytes) -> bool:
    """Whether ``head`` starts a VMDK sparse extent (text descriptors are not images)."""
    return head[: len(MAGIC)] == MAGIC


class _Kind(enum.Enum):
    DESCRIPTOR = "descriptor"
    GRAIN_DIRECTORY = "grain directory"
    GRAIN_TABLE = "grain table"


@dataclass(slots=True)
class _Item:
    """A metadata structure at a known place in the file, gathered whole then parsed."""

    kind: _Kind
    start: int
    length: int
    index: int = 0  # a grain table's directory index
    buf: bytearray = field(default_factory=bytearray)

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def done(self) -> bool:
        return len(self.buf) == self.length

    def name(self) -> str:
        suffix = f" {self.index}" if self.kind is _Kind.GRAIN_TABLE else ""
        return f"the {self.kind.value}{suffix} at byte {self.start}"


class VmdkReader(ImageReader):
    """monolithicSparse and streamOptimized VMDK to raw runs; see the module docstring."""

    format = "vmdk"

    def __init__(self, limits: ReaderLimits, spill: Spill) -> None:
        super().__init__(limits, spill)
        self.descriptor: Descriptor | None = None
        """The embedded descriptor (createType, extents, ddb.* keys) once parsed."""
        self._head = bytearray()
        self._text = False
        self._header: SparseHeader | None = None
        self._budget = MetadataBudget(self.format, limits.max_metadata_bytes)
        self._spill = SpillBuffer(spill, limits.max_spill_bytes)
        self._fixed: list[_Item] = []
        self._gt_queue = array("Q")
        self._gt_next = 0
        self._gt_item: _Item | None = None
        self._map_open = False
        self._front_tables: dict[int, array[int]] | None = None
        self._allocated = array("Q")
        self._grains: SparseGrains | None = None
        self._markers: MarkerStream | None = None
        self._runs = RunBuffer(RUN_MERGE_BYTES)

    @property
    def virtual_size(self) -> int | None:
        return self._header.virtual_bytes if self._header else None

    def feed(self, data: bytes) -> Iterator[Run]:
        view = memoryview(frozen_bytes(data))
        while view:
            used = yield from self._step(view)
            view = view[used:]

    def finish(self) -> Iterator[Run]:
        header = self._header
        if header is None:
            raise self._short_head_error()
        pending = [*self._fixed, *([self._gt_item] if self._gt_item else [])]
        if pending:
            item = min(pending, key=lambda i: i.start)
            raise ImageError(
                f"vmdk: {item.name()} lies past the end of the file "
                f"({self.position} bytes): truncated"
            )
        if self.position < header.overhead_bytes:
            raise ImageError(
                f"vmdk: the file ends at byte {self.position}, before its grain area at "
                f"byte {header.overhead_bytes}: truncated"
            )
        if header.has_markers:
            self._marker_stream(header).finish(self.position)
        else:
            assert self._grains is not None, "the map closes before the file can end"
            self._grains.finish(self.position)
        yield from self._runs.flush()

    # -- the dispatcher ----------------------------------------------------------------

    def _step(self, view: memoryview) -> Generator[Run, None, int]:
        """Consume a prefix of ``view``; yield the runs it completes; return its length."""
        if self._header is None:
            return self._step_head(view)
        item = self._next_item()
        here = self.position
        if item is not None and item.start <= here:
            assert item.start + len(item.buf) == here, "items are gathered in file order"
            used = min(len(view), item.end - here)
            item.buf += view[:used]
            self.position += used
            if item.done:
                yield from self._complete(item)
            return used
        used = len(view) if item is None else min(len(view), item.start - here)
        self.position += used
        yield from self._route(here, view[:used])
        return used

    def _next_item(self) -> _Item | None:
        items = [*self._fixed, *([self._gt_item] if self._gt_item else [])]
        return min(items, key=lambda i: i.start) if items else None

    def _route(self, offset: int, data: memoryview) -> Iterator[Run]:
        """Bytes that are not known metadata: spill them, or hand them to the data path."""
        header = self._header
        assert header is not None
        if self._map_open:
            self._spill.add(offset, data)
        elif header.has_markers:
            skip = max(header.overhead_bytes - offset, 0)
            if skip < len(data):
                stream = self._marker_stream(header)
                for guest, grain in stream.feed(data[skip:]):
                    yield from self._emit(guest, grain)
        else:
            assert self._grains is not None
            for guest, grain in self._grains.feed(offset, data):
                yield from self._emit(guest, grain)

    def _emit(self, offset: int, data: RunData) -> Iterator[Run]:
        yield from self._runs.add(offset, data)  # all-zero grains are dropped there

    # -- the header --------------------------------------------------------------------

    def _step_head(self, view: memoryview) -> int:
        limit = TEXT_DESCRIPTOR_MAX_BYTES if self._text else HEADER_BYTES
        used = min(len(view), limit - len(self._head))
        self._head += view[:used]
        self.position += used
        if self._text:
            if len(self._head) >= TEXT_DESCRIPTOR_MAX_BYTES:
                raise refuse_text_descriptor(bytes(self._head))
        elif len(self._head) == HEADER_BYTES:
            if self._head[: len(MAGIC)] != MAGIC and looks_like_text_descriptor(self._head):
                self._text = True
            else:
                self._start(parse_header(bytes(self._head)))
        return used

    def _short_head_error(self) -> ImageError:
        if self._text or (self._head and looks_like_text_descriptor(self._head)):
            return refuse_text_descriptor(bytes(self._head))
        return ImageError(
            f"vmdk: the file ends after {self.position} bytes, inside the "
            f"{HEADER_BYTES}-byte header: truncated"
        )

    def _start(self, header: SparseHeader) -> None:
        self.check_virtual_size(header.virtual_bytes)
        check_grain_count(header)
        self._header = header
        # Zero granules are whole grains: a grain is stored whole or not at all.
        self._runs = RunBuffer(RUN_MERGE_BYTES, header.grain_bytes)
        self._fixed.append(self._descriptor_item(header))
        if header.gd_at_end:
            if not header.has_markers:
                raise ImageError(
                    "vmdk: the header puts the grain directory at the end, which only a "
                    "streamOptimized extent may do"
                )
            return
        if header.has_markers and header.gd_start_bytes >= header.overhead_bytes:
            return  # the directory is part of the stream: checked there
        self._fixed.append(self._directory_item(header))
        self._front_tables = {} if header.has_markers else None
        self._map_open = True

    def _descriptor_item(self, header: SparseHeader) -> _Item:
        if not header.descriptor_sector or not header.descriptor_sectors:
            raise UnsupportedImage(
                "vmdk: the extent has no embedded descriptor: it is one extent of a "
                "multi-file disk, which needs its descriptor file"
            )
        length = header.descriptor_sectors * SECTOR_BYTES
        if length > self.limits.max_header_bytes:
            raise ImageError(
                f"vmdk: a descriptor of {length} bytes exceeds the limit of "
                f"{self.limits.max_header_bytes} bytes"
            )
        if header.has_markers and header.descriptor_end_bytes > header.overhead_bytes:
            raise ImageError("vmdk: the descriptor runs into the grain stream")
        return _Item(_Kind.DESCRIPTOR, header.descriptor_start_bytes, length)

    def _directory_item(self, header: SparseHeader) -> _Item:
        start, end = header.gd_start_bytes, header.gd_start_bytes + header.gd_bytes
        if start < HEADER_BYTES:
            raise ImageError("vmdk: the grain directory overlaps the header")
        if start < header.descriptor_end_bytes and header.descriptor_start_bytes < end:
            raise ImageError("vmdk: the grain directory overlaps the descriptor")
        if header.has_markers and end > header.overhead_bytes:
            raise ImageError("vmdk: the grain directory runs into the grain stream")
        self._budget.charge(2 * header.gd_bytes, "the grain directory")
        return _Item(_Kind.GRAIN_DIRECTORY, start, header.gd_bytes)

    # -- metadata items ----------------------------------------------------------------

    def _complete(self, item: _Item) -> Iterator[Run]:
        header = self._header
        assert header is not None
        if item.kind is _Kind.DESCRIPTOR:
            self._fixed.remove(item)
            self.descriptor = parse_descriptor(bytes(item.buf))
            check_embedded(self.descriptor, header.capacity_sectors, header.has_markers)
        elif item.kind is _Kind.GRAIN_DIRECTORY:
            self._fixed.remove(item)
            self._gt_queue = plan_grain_tables(
                u32_array(item.buf),
                header,
                self._budget,
                self._forbidden(header),
                header.overhead_bytes if header.has_markers else None,
            )
            yield from self._advance_tables()
        else:
            self._take_table(item)
            self._gt_item = None
            yield from self._advance_tables()

    def _forbidden(self, header: SparseHeader) -> list[tuple[int, int, str]]:
        """Byte ranges a grain table must not overlap."""
        gd_end = header.gd_start_bytes + header.gd_bytes
        return [
            (0, HEADER_BYTES, "header"),
            (header.descriptor_start_bytes, header.descriptor_end_bytes, "descriptor"),
            (header.gd_start_bytes, gd_end, "grain directory"),
        ]

    def _advance_tables(self) -> Iterator[Run]:
        """Make the next grain table the pending item, or close the map if none is left."""
        header = self._header
        assert header is not None
        while self._gt_item is None:
            behind = self._tables_behind(header)
            if behind:
                self._fill_from_spill(behind)
            elif self._gt_next < len(self._gt_queue):
                self._gt_item = self._table_item(header, self._gt_next)
                self._gt_next += 1
            else:
                yield from self._close_map(header)
                return

    def _table_item(self, header: SparseHeader, queue_index: int) -> _Item:
        sector, index = unpack(self._gt_queue[queue_index])
        return _Item(_Kind.GRAIN_TABLE, sector * SECTOR_BYTES, header.gt_bytes, index)

    def _tables_behind(self, header: SparseHeader) -> list[_Item]:
        """Up to a batch of the next grain tables that start behind the current position."""
        items: list[_Item] = []
        while len(items) < TABLE_BATCH and self._gt_next < len(self._gt_queue):
            item = self._table_item(header, self._gt_next)
            if item.start >= self.position:
                break
            items.append(item)
            self._gt_next += 1
        return items

    def _fill_from_spill(self, items: list[_Item]) -> None:
        """Gather tables that lie (partly) behind us from the spill, where their bytes went."""
        ranges = [(item.start, min(item.end, self.position)) for item in items]
        for item, data in zip(items, self._spill.take_ranges(ranges), strict=True):
            item.buf += data
            if item.done:
                self._take_table(item)
            else:  # only the last can straddle the current position
                self._gt_item = item

    def _take_table(self, item: _Item) -> None:
        header = self._header
        assert header is not None
        entries = table_entries(item.buf, item.index, header)
        if self._front_tables is not None:
            self._budget.charge(header.gt_bytes, "the grain tables")
            self._front_tables[item.index] = entries
            return
        count = len(entries) - entries.count(0)
        self._budget.charge(PACKED_BYTES * count, "the grain list")
        self._allocated.extend(allocated_grains(entries, item.index, header.gtes_per_gt))

    def _close_map(self, header: SparseHeader) -> Iterator[Run]:
        """Every table is in: replay (monolithicSparse) or drop (stream) the spill."""
        self._map_open = False
        if header.has_markers:
            self._spill.discard()
            return
        grains = sort_packed(self._allocated, self._budget, "sorting the grain list")
        self._allocated = array("Q")
        self._grains = SparseGrains(header, grains)
        for offset, data in self._spill.drain():
            for guest, grain in self._grains.feed(offset, data):
                yield from self._emit(guest, grain)

    def _marker_stream(self, header: SparseHeader) -> MarkerStream:
        if self._markers is None:
            self._markers = MarkerStream(
                header, header.overhead_bytes, self._budget, self._front_tables
            )
        return self._markers
