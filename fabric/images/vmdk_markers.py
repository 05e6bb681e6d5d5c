"""The marker stream of a streamOptimized VMDK extent, parsed as it flows by.

From ``overHead`` on, a stream-optimized extent is a sequence of sector-aligned markers
(VMware Virtual Disk Format 1.1, "Stream-Optimized Compressed Sparse Extents"; qemu's
``VmdkGrainMarker``)::

    u64 val   u32 size   [u32 type   pad to 512]
    size > 0: a grain marker: val is the grain's LBA, ``size`` bytes of zlib data follow
              at byte 12, padded to the next sector
    size = 0: a metadata marker of one sector; ``type`` says what the ``val`` sectors
              after it hold: 0 end of stream (val 0), 1 a grain table, 2 the grain
              directory, 3 the footer (a copy of the header; one sector), 4 progress

Because each grain names its own LBA it is inflated and emitted as soon as it has
arrived. The grain tables are still checked: every grain marker is logged where it was
found, and the tables -- at the front of the file as qemu and open-vmdk write them, or
at the end of the stream before the footer when the header says ``GD_AT_END`` -- must
list exactly those grains (qemu reads through the tables, so an image they disagree
with would convert differently there). The stream must end with an end-of-stream marker
when its tables are in the stream; qemu 7 writes front-table images without one.

Memory: one marker head, one grain's compressed bytes (at most two grains, and only when
a chunk boundary cuts them), one inflated grain, the marker log and, for
in-stream tables, the tables themselves -- charged to the reader's metadata budget.
"""

from __future__ import annotations

import enum
import struct
import zlib
from array import array
from collections.abc import Iterator

from fabric.images.base import ImageError, MetadataBudget, RunData
from fabric.images.vmdk_header import SECTOR_BYTES, SparseHeader, parse_header
from fabric.images.vmdk_tables import (
    GrainLog,
    table_entries,
    u32_array,
    verify_tables,
)

GRAIN_HEAD_BYTES = 12  # u64 lba, u32 size
META_HEAD_BYTES = 16  # u64 val, u32 size (0), u32 type
MAX_COMPRESSED_GRAINS = 2
"""A compressed grain may take at most this many grains of file space (qemu's bound)."""


class MarkerType(enum.IntEnum):
    END_OF_STREAM = 0
    GRAIN_TABLE = 1
    GRAIN_DIRECTORY = 2
    FOOTER = 3
    PROGRESS = 4


class _Phase(enum.Enum):
    HEAD = enum.auto()  # gathering a marker's first 12 (grain) or 16 (metadata) bytes
    GRAIN = enum.auto()  # inflating a grain's compressed bytes
    PAYLOAD = enum.auto()  # gathering the part of a metadata payload we keep
    SKIP = enum.auto()  # passing over padding or payload we do not keep
    DONE = enum.auto()  # after the end-of-stream marker


class MarkerStream:
    """Consumes the file from the first marker on; yields ``(guest offset, grain data)``."""

    def __init__(
        self,
        header: SparseHeader,
        start_bytes: int,
        budget: MetadataBudget,
        front_tables: dict[int, array[int]] | None,
    ) -> None:
        self._header = header
        self._budget = budget
        self._front_tables = front_tables
        self._offset = start_bytes
        self._phase = _Phase.HEAD
        self._marker_at = start_bytes
        self._buf = bytearray()
        self._remaining = 0
        self._keep = 0
        self._payload_type = MarkerType.END_OF_STREAM
        self._padding = False
        self._grain_index = 0
        self._grain_end = 0
        self._zbuf = bytearray()  # a grain's compressed bytes, when a chunk cuts them
        self._log = GrainLog(header, budget)
        self._stream_tables: dict[int, array[int]] = {}
        self._gd: array[int] | None = None
        self._gd_sector = 0
        self._footer_seen = False

    def feed(self, data: bytes | memoryview) -> Iterator[tuple[int, RunData]]:
        """Consume the next file bytes; yield completed grains (bytes, or views of them)."""
        view = memoryview(data)
        while view:
            used, grain = self._step(view)
            self._offset += used
            view = view[used:]
            if grain is not None:
                yield grain

    def finish(self, end_bytes: int) -> None:
        """The file ended at ``end_bytes``: refuse an unfinished stream or table mismatch."""
        at_boundary = self._phase is _Phase.HEAD and not self._buf
        trailing_padding = self._phase is _Phase.SKIP and self._padding
        if self._front_tables is None:
            if self._phase is not _Phase.DONE:
                raise ImageError(
                    "vmdk: the stream ended without its footer and end-of-stream marker: truncated"
                )
            return
        if not (self._phase is _Phase.DONE or at_boundary or trailing_padding):
            raise ImageError(
                f"vmdk: the file ends inside the marker at byte {self._marker_at}: truncated"
            )
        verify_tables(self._front_tables, self._log.tables, self._header, end_bytes)

    def _step(self, view: memoryview) -> tuple[int, tuple[int, RunData] | None]:
        match self._phase:
            case _Phase.HEAD:
                return self._gather_head(view), None
            case _Phase.GRAIN:
                return self._inflate(view)
            case _Phase.PAYLOAD:
                return self._gather_payload(view), None
            case _Phase.SKIP:
                used = min(len(view), self._remaining)
                self._remaining -= used
                if not self._remaining:
                    self._phase = _Phase.HEAD
                return used, None
            case _Phase.DONE:
                return len(view), None

    def _gather_head(self, view: memoryview) -> int:
        if not self._buf:
            self._marker_at = self._offset
        want = GRAIN_HEAD_BYTES
        if len(self._buf) >= GRAIN_HEAD_BYTES and self._marker_size() == 0:
            want = META_HEAD_BYTES
        used = min(len(view), want - len(self._buf))
        self._buf += view[:used]
        if len(self._buf) == GRAIN_HEAD_BYTES and self._marker_size() > 0:
            self._start_grain()
        elif len(self._buf) == META_HEAD_BYTES:
            self._start_metadata()
        return used

    def _marker_size(self) -> int:
        size: int = struct.unpack_from("<I", self._buf, 8)[0]
        return size

    # -- grains ------------------------------------------------------------------------

    def _start_grain(self) -> None:
        lba, size = struct.unpack_from("<QI", self._buf)
        self._buf.clear()
        header = self._header
        where = f"the grain marker at byte {self._marker_at}"
        if self._footer_seen:
            raise ImageError(f"vmdk: {where} comes after the footer")
        if lba % header.grain_sectors:
            raise ImageError(f"vmdk: {where} has LBA {lba}, not a multiple of the grain size")
        if lba >= header.capacity_sectors:
            raise ImageError(
                f"vmdk: {where} has LBA {lba}, beyond the capacity of "
                f"{header.capacity_sectors} sectors"
            )
        if size > MAX_COMPRESSED_GRAINS * header.grain_bytes:
            raise ImageError(f"vmdk: {where} claims {size} compressed bytes, more than a grain")
        self._grain_index = lba // header.grain_sectors
        self._log.record(self._grain_index, self._marker_at // SECTOR_BYTES)
        self._remaining = size
        self._grain_end = self._marker_at + GRAIN_HEAD_BYTES + size
        self._phase = _Phase.GRAIN

    def _inflate(self, view: memoryview) -> tuple[int, tuple[int, RunData] | None]:
        used = min(len(view), self._remaining)
        self._remaining -= used
        if not self._zbuf and not self._remaining:
            return used, self._end_grain(view[:used])  # the whole grain is here: no copy
        self._zbuf += view[:used]  # at most MAX_COMPRESSED_GRAINS grains (checked)
        if self._remaining:
            return used, None
        grain = self._end_grain(self._zbuf)
        self._zbuf = bytearray()
        return used, grain

    def _end_grain(self, compressed: bytes | bytearray | memoryview) -> tuple[int, RunData]:
        """Inflate one grain's compressed bytes (all of them, at once: one call, no copies)."""
        grain_bytes = self._header.grain_bytes
        inflater = zlib.decompressobj()
        try:
            # One byte more than a grain tells a bomb from a full grain; no more is made.
            out = inflater.decompress(compressed, grain_bytes + 1)
        except zlib.error as exc:
            raise self._grain_error(f"does not inflate ({exc})") from None
        if len(out) > grain_bytes:
            raise self._grain_error("inflates to more than a grain")
        if not inflater.eof:
            raise self._grain_error("is cut short (incomplete zlib stream)")
        need = self._header.grain_needed_bytes(self._grain_index)
        if len(out) < need:
            raise self._grain_error(f"inflates to {len(out)} bytes, expected {need}")
        self._skip(-self._grain_end % SECTOR_BYTES, padding=True)
        data = out if len(out) == need else memoryview(out)[:need]
        return self._grain_index * grain_bytes, data

    def _grain_error(self, problem: str) -> ImageError:
        offset = self._grain_index * self._header.grain_bytes
        return ImageError(
            f"vmdk: the compressed grain for guest offset {offset} (marker at byte "
            f"{self._marker_at}) {problem}"
        )

    # -- metadata markers --------------------------------------------------------------

    def _start_metadata(self) -> None:
        val, _, raw_type = struct.unpack_from("<QII", self._buf)
        self._buf.clear()
        try:
            kind = MarkerType(raw_type)
        except ValueError:
            raise ImageError(
                f"vmdk: unknown marker type {raw_type} at byte {self._marker_at}"
            ) from None
        if self._footer_seen and kind not in (MarkerType.END_OF_STREAM, MarkerType.PROGRESS):
            raise ImageError(f"vmdk: a {kind.name} marker comes after the footer")
        rest_of_sector = SECTOR_BYTES - META_HEAD_BYTES
        if kind is MarkerType.END_OF_STREAM:
            if val:
                raise ImageError(f"vmdk: the end-of-stream marker at byte {self._marker_at} "
                                 f"has a non-zero value {val}")  # fmt: skip
            if self._front_tables is None and not self._footer_seen:
                raise ImageError(
                    f"vmdk: the end-of-stream marker at byte {self._marker_at} comes before "
                    "the footer"
                )
            self._phase = _Phase.DONE
        elif kind is MarkerType.PROGRESS:
            self._skip(rest_of_sector + val * SECTOR_BYTES)
        else:
            payload = max(val, 1) if kind is MarkerType.FOOTER else val
            self._start_payload(kind, rest_of_sector, payload * SECTOR_BYTES)

    def _start_payload(self, kind: MarkerType, lead_bytes: int, payload_bytes: int) -> None:
        keep = self._payload_keep(kind)
        if payload_bytes < keep:
            raise ImageError(
                f"vmdk: the {kind.name} marker at byte {self._marker_at} announces "
                f"{payload_bytes} bytes, less than the {keep} it needs"
            )
        # the rest of the marker sector is skipped by gathering it and dropping it below
        self._payload_type = kind
        self._keep = lead_bytes + keep
        self._remaining = payload_bytes - keep
        self._phase = _Phase.PAYLOAD
        if kind is MarkerType.GRAIN_DIRECTORY and self._front_tables is None:
            self._budget.charge(2 * self._header.gd_bytes, "the grain directory")
        elif kind is MarkerType.GRAIN_TABLE and self._front_tables is None:
            self._budget.charge(self._header.gt_bytes, "the streamed grain tables")

    def _payload_keep(self, kind: MarkerType) -> int:
        if kind is MarkerType.FOOTER:
            return SECTOR_BYTES
        if self._front_tables is not None:
            return 0  # the tables at the front of the file are the ones we check
        if kind is MarkerType.GRAIN_DIRECTORY:
            return self._header.gd_bytes
        return self._header.gt_bytes

    def _gather_payload(self, view: memoryview) -> int:
        used = min(len(view), self._keep - len(self._buf))
        self._buf += view[:used]
        if len(self._buf) == self._keep:
            lead = SECTOR_BYTES - META_HEAD_BYTES
            payload = bytes(self._buf[lead:])
            payload_sector = self._marker_at // SECTOR_BYTES + 1
            self._buf.clear()
            self._skip(self._remaining)
            self._take_payload(payload, payload_sector)
        return used

    def _take_payload(self, payload: bytes, sector: int) -> None:
        if self._payload_type is MarkerType.FOOTER:
            self._take_footer(payload)
        elif self._front_tables is not None:
            return
        elif self._payload_type is MarkerType.GRAIN_TABLE:
            self._stream_tables[sector] = u32_array(payload)
        elif self._gd is not None:
            raise ImageError(f"vmdk: a second grain directory at sector {sector}")
        else:
            self._gd, self._gd_sector = u32_array(payload), sector

    def _take_footer(self, raw: bytes) -> None:
        footer = parse_header(raw, "footer")
        header = self._header
        for name in ("capacity_sectors", "grain_sectors", "gtes_per_gt", "compression"):
            if getattr(footer, name) != getattr(header, name):
                raise ImageError(f"vmdk: the footer's {name} disagrees with the header's")
        if self._front_tables is not None:
            expected_gd = header.gd_sector
        elif self._gd is None:
            raise ImageError("vmdk: the footer comes before any grain directory")
        else:
            expected_gd = self._gd_sector
            if not header.gd_at_end and header.gd_sector != expected_gd:
                raise ImageError(
                    f"vmdk: the header points at a grain directory at sector "
                    f"{header.gd_sector}, but it is at sector {expected_gd}"
                )
        if footer.gd_sector != expected_gd:
            raise ImageError(
                f"vmdk: the footer points at a grain directory at sector {footer.gd_sector}, "
                f"but it is at sector {expected_gd}"
            )
        self._footer_seen = True
        if self._front_tables is None:
            verify_tables(self._streamed_tables(), self._log.tables, header, self._offset)

    def _streamed_tables(self) -> dict[int, array[int]]:
        """The in-stream tables by directory index, normalised like the front tables."""
        assert self._gd is not None
        tables: dict[int, array[int]] = {}
        used: dict[int, int] = {}
        for gd_index, sector in enumerate(self._gd):
            if not sector:
                continue
            if sector in used:
                raise ImageError(
                    f"vmdk: the grain table at sector {sector} is referenced twice "
                    f"(directory entries {used[sector]} and {gd_index})"
                )
            used[sector] = gd_index
            raw = self._stream_tables.get(sector)
            if raw is None:
                raise ImageError(
                    f"vmdk: grain directory entry {gd_index} points to sector {sector}, "
                    "where no grain table marker was found"
                )
            tables[gd_index] = table_entries(raw.tobytes(), gd_index, self._header)
        return tables

    def _skip(self, nbytes: int, padding: bool = False) -> None:
        self._padding = padding
        self._remaining = nbytes
        self._phase = _Phase.SKIP if nbytes else _Phase.HEAD
