"""Streaming reader for dynamic and fixed VHDX images (Hyper-V, [MS-VHDX]).

Theory of operation
-------------------
The reader collects structures through the shared ``Walker`` (vhd_walker.py) as the
file streams past, and ``_advance`` -- the one dispatcher -- takes each step as soon as
its inputs have all arrived:

1. file identifier, both headers -> the current header (vhdx_format.current_header);
   a log that needs replay is refused, the log's range is claimed;
2. both region tables -> the first valid one locates the BAT and the metadata region
   (unknown required regions are refused); every region is claimed;
3. metadata table -> the four items we need are requested;
4. items -> disk parameters (a differencing disk is refused);
5. BAT + parameters -> each FULLY_PRESENT payload block becomes an extent, sorted by
   file offset in bounded memory (vhd_keysort.py), and the walker gets the plan.

qemu writes the BAT before the metadata region, so step 5 waits for step 4 with the
BAT's bytes in memory (bounded by ``limits.max_metadata_bytes``). Payload blocks always
come later in files written by qemu and Hyper-V; data met before the plan goes to the
spill area. Blocks in state NOT_PRESENT, UNDEFINED, ZERO or UNMAPPED read as zeros;
PARTIALLY_PRESENT needs a parent and is refused. Sector bitmap entries are ignored: a
disk without a parent has none. A last block may be cut short at the end of the disk's
guest data, as qemu allows; blocks that end past the end of the file are refused.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator

from fabric.images.base import ImageError, ImageReader, ReaderLimits, Run, Spill
from fabric.images.vhd_keysort import KEY_BYTES, KeySorter
from fabric.images.vhd_walker import MAX_FILE_OFFSET_BYTES, Extent, Walker
from fabric.images.vhdx_format import (
    BAT_ENTRY_BYTES,
    FILE_SIGNATURE,
    HEADER_BYTES,
    HEADER_OFFSETS,
    HEADER_SECTION_BYTES,
    ITEM_BYTES,
    ITEM_NAMES,
    METADATA_TABLE_BYTES,
    OFFSET_SHIFT,
    PAYLOAD_FULLY_PRESENT,
    PAYLOAD_PARTIALLY_PRESENT,
    REGION_TABLE_BYTES,
    REGION_TABLE_OFFSETS,
    STATE_MASK,
    ZERO_STATES,
    DiskParams,
    MetadataItem,
    Region,
    VhdxHeader,
    check_log,
    current_header,
    decode_header,
    decode_metadata_table,
    decode_params,
    decode_region_table,
    known_regions,
)

_INDEX_BITS = 32
"""Sort keys are ``offset in MiB << 32 | payload block index``."""
_MAX_OFFSET_MB = MAX_FILE_OFFSET_BYTES >> OFFSET_SHIFT


def sniff(head: bytes) -> bool:
    """A VHDX starts with its file identifier."""
    return head[:8] == FILE_SIGNATURE


class VhdxReader(ImageReader):
    """Dynamic or fixed VHDX to raw runs; see the module docstring."""

    format = "vhdx"

    def __init__(self, limits: ReaderLimits, spill: Spill) -> None:
        super().__init__(limits, spill)
        self._walker = Walker(self.format, limits, spill)
        self._parts: dict[str, bytes] = {}  # structures arrived and not yet used, by name
        self._header: VhdxHeader | None = None
        self._regions: tuple[Region, Region] | None = None  # BAT, metadata
        self._items: dict[bytes, MetadataItem] | None = None
        self._params: DiskParams | None = None
        self._walker.claim(0, HEADER_SECTION_BYTES, "the header section")
        self._collect(0, len(FILE_SIGNATURE), "file identifier")
        for i, offset in enumerate(HEADER_OFFSETS, 1):
            self._collect(offset, HEADER_BYTES, f"header {i}")
        for i, offset in enumerate(REGION_TABLE_OFFSETS, 1):
            self._collect(offset, REGION_TABLE_BYTES, f"region table {i}")

    @property
    def virtual_size(self) -> int | None:
        return None if self._params is None else self._params.virtual_size

    def feed(self, data: bytes) -> Iterator[Run]:
        yield from self._walker.feed(data)
        self.position = self._walker.position

    def finish(self) -> Iterator[Run]:
        yield from self._walker.finish()

    # -- collecting structures -------------------------------------------------------

    def _collect(self, start: int, length: int, name: str) -> None:
        self._walker.want(start, length, f"the {name}", lambda buf: self._arrived(name, buf))

    def _arrived(self, name: str, buf: bytes) -> None:
        self._parts[name] = buf
        self._advance()

    def _advance(self) -> None:
        """Take every step whose inputs have all arrived (see the module docstring)."""
        parts = self._parts
        signature = parts.pop("file identifier", None)
        if signature is not None and signature != FILE_SIGNATURE:
            raise ImageError(f"vhdx: bad file identifier {signature!r}")
        if self._header is None and {"header 1", "header 2"} <= parts.keys():
            self._use_header()
        if (
            self._regions is None
            and self._header is not None
            and {"region table 1", "region table 2"} <= parts.keys()
        ):
            self._use_region_table()
        if self._items is None and "metadata table" in parts:
            self._use_metadata_table()
        names = {ITEM_NAMES[guid] for guid in ITEM_BYTES}
        if self._params is None and self._items is not None and names <= parts.keys():
            self._use_items()
        if not self._walker.installed and self._params is not None and "BAT" in parts:
            self._use_bat()

    def _use_header(self) -> None:
        first, second = (decode_header(self._parts.pop(f"header {i}")) for i in (1, 2))
        header = current_header(first, second)
        check_log(header)
        self._walker.claim(header.log_offset, header.log_length, "the log")
        self._header = header

    def _use_region_table(self) -> None:
        tables = [decode_region_table(self._parts.pop(f"region table {i}")) for i in (1, 2)]
        regions = next((t for t in tables if t is not None), None)
        if regions is None:
            raise ImageError("vhdx: no valid region table (bad signature or CRC-32C in both)")
        bat, meta = known_regions(regions)
        for region in regions:
            self._walker.claim(region.file_offset, region.length, _region_name(region, bat, meta))
        if meta.length < METADATA_TABLE_BYTES:
            raise ImageError(f"vhdx: the metadata region ({meta.length} bytes) has no room")
        self._collect(meta.file_offset, METADATA_TABLE_BYTES, "metadata table")
        self._collect(bat.file_offset, min(bat.length, self.limits.max_metadata_bytes), "BAT")
        self._regions = bat, meta

    def _use_metadata_table(self) -> None:
        assert self._regions is not None
        meta = self._regions[1]
        items = decode_metadata_table(self._parts.pop("metadata table"), meta.length)
        for guid, need in ITEM_BYTES.items():
            self._collect(meta.file_offset + items[guid].offset, need, ITEM_NAMES[guid])
        self._items = items

    def _use_items(self) -> None:
        params = decode_params({guid: self._parts.pop(ITEM_NAMES[guid]) for guid in ITEM_BYTES})
        self.check_virtual_size(params.virtual_size)
        self._params = params

    def _use_bat(self) -> None:
        assert self._params is not None and self._regions is not None
        params, bat_region = self._params, self._regions[0]
        raw = self._parts.pop("BAT")
        need = params.bat_entries * BAT_ENTRY_BYTES
        if need > bat_region.length:
            raise ImageError(
                f"vhdx: the BAT region ({bat_region.length} bytes) is too small for the "
                f"{params.bat_entries} entries of a {params.virtual_size}-byte disk"
            )
        if need > len(raw):
            raise ImageError(
                f"vhdx: a BAT of {need} bytes exceeds the metadata limit of "
                f"{self.limits.max_metadata_bytes} bytes"
            )
        entries = array("Q", raw[:need])
        del raw
        if sys.byteorder == "big":
            entries.byteswap()
        sorter = self._present_blocks(params, entries, self.limits.max_metadata_bytes - need)
        del entries
        self._walker.install(lambda: _blocks(params, sorter))

    def _present_blocks(
        self, params: DiskParams, entries: array[int], budget_bytes: int
    ) -> KeySorter:
        """Sort keys of the FULLY_PRESENT payload blocks; refuse impossible states."""
        sorter = KeySorter()
        for block in range(params.data_blocks):
            entry = entries[params.bat_index(block)]
            state = entry & STATE_MASK
            if state in ZERO_STATES:
                continue
            if state == PAYLOAD_PARTIALLY_PRESENT:
                raise ImageError(
                    f"vhdx: block {block} is PARTIALLY_PRESENT, but the disk has no parent"
                )
            if state != PAYLOAD_FULLY_PRESENT:
                raise ImageError(f"vhdx: block {block} has the reserved BAT state {state}")
            offset_mb = entry >> OFFSET_SHIFT
            if offset_mb >= _MAX_OFFSET_MB:
                raise ImageError(f"vhdx: block {block} lies beyond any plausible file size")
            if (len(sorter) + 1) * KEY_BYTES > budget_bytes:
                raise ImageError(
                    f"vhdx: the allocated blocks exceed the metadata limit of "
                    f"{self.limits.max_metadata_bytes} bytes"
                )
            sorter.add(offset_mb << _INDEX_BITS | block)
        return sorter


def _region_name(region: Region, bat: Region, meta: Region) -> str:
    if region is bat:
        return "the BAT region"
    if region is meta:
        return "the metadata region"
    return f"region {region.guid.hex()}"


def _blocks(params: DiskParams, sorter: KeySorter) -> Iterator[Extent]:
    """The present payload blocks in file order."""
    block_size, mask = params.block_size, (1 << _INDEX_BITS) - 1
    for key in sorter.merged():
        guest = (key & mask) * block_size
        yield Extent(
            file_offset=(key >> _INDEX_BITS) << OFFSET_SHIFT,
            span=block_size,
            guest_offset=guest,
            guest_length=min(block_size, params.virtual_size - guest),
        )
