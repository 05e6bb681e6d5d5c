"""On-disk structures of the VHD format (Microsoft "Virtual Hard Disk Image Format").

Theory of operation
-------------------
Every VHD ends with a 512-byte *footer*; a dynamic (sparse) VHD also keeps a copy of it at
offset 0, followed by a 1024-byte *dynamic disk header* that locates the *BAT* (block
allocation table: one big-endian 32-bit sector offset per block, 0xFFFFFFFF for none).
Each allocated block is a sector bitmap (padded to 512 bytes) and ``block_size`` bytes of
data. All integers are big-endian. Both structures carry a checksum: the one's
complement of the byte sum of the structure with the checksum field taken as zero.

This module only decodes and checks bytes; ``vhd.py`` streams a dynamic VHD and
``raw.py`` recognises the footer of a fixed one.

The disk size follows qemu (block/vpc.c): images written by Virtual PC ("vpc ") and old
qemu ("qemu") are as large as their CHS geometry, unless the geometry is the maximum
one; every other creator's disk is ``current_size`` bytes. (qemu 7.2 used a list of
creators that trust ``current_size`` instead; both rules agree on every creator it knew.)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from fabric.images.base import ImageError, MiB

FOOTER_BYTES = 512
DYN_HEADER_BYTES = 1024
SECTOR_BYTES = 512
FOOTER_COOKIE = b"conectix"
DYN_HEADER_COOKIE = b"cxsparse"
DISK_FIXED = 2
DISK_DYNAMIC = 3
DISK_DIFFERENCING = 4
BAT_ENTRY_BYTES = 4
BAT_UNALLOCATED = 0xFFFFFFFF
MIN_BLOCK_BYTES = 4096
"""Smallest block accepted; below it qemu and the spec disagree on the bitmap size."""
MAX_BLOCK_BYTES = 256 * MiB
"""Largest block accepted (the default is 2 MiB)."""
MAX_DISK_SECTORS = 0xFF000000
"""2040 GiB, the largest VHD (qemu's VHD_MAX_SECTORS)."""
MAX_GEOMETRY_SECTORS = 65535 * 16 * 255
"""The maximum CHS geometry; a disk with it is sized by ``current_size``."""
CHS_SIZED_CREATORS = (b"vpc ", b"qemu")
"""Creator apps whose disks are as large as their CHS geometry."""

_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB")
_DYN_HEADER = struct.Struct(">8sQQIIII")
_FOOTER_CHECKSUM_AT = 64
_DYN_HEADER_CHECKSUM_AT = 36


@dataclass(frozen=True, slots=True)
class VhdFooter:
    """The hard disk footer (also the copy at offset 0 of a dynamic disk)."""

    features: int
    version: int
    data_offset: int
    timestamp: int
    creator_app: bytes
    creator_version: int
    creator_os: bytes
    original_size: int
    current_size: int
    cylinders: int
    heads: int
    sectors_per_track: int
    disk_type: int
    checksum: int
    unique_id: bytes
    saved_state: int

    def disk_bytes(self) -> int:
        """Guest disk size in bytes, as qemu reads it (see the module docstring)."""
        chs = self.cylinders * self.heads * self.sectors_per_track
        if self.creator_app in CHS_SIZED_CREATORS and chs != MAX_GEOMETRY_SECTORS:
            return chs * SECTOR_BYTES
        return self.current_size // SECTOR_BYTES * SECTOR_BYTES


@dataclass(frozen=True, slots=True)
class DynHeader:
    """The dynamic disk header of a dynamic or differencing VHD."""

    table_offset: int
    max_table_entries: int
    block_size: int

    @property
    def bitmap_bytes(self) -> int:
        """Sector bitmap in front of each block: one bit per sector, whole sectors."""
        bits = self.block_size // SECTOR_BYTES
        return -(-bits // (8 * SECTOR_BYTES)) * SECTOR_BYTES

    @property
    def bat_bytes(self) -> int:
        return self.max_table_entries * BAT_ENTRY_BYTES


def vhd_checksum(buf: bytes | bytearray, checksum_at: int) -> int:
    """One's complement of the byte sum, with the 4-byte checksum field read as zero."""
    total = sum(buf) - sum(buf[checksum_at : checksum_at + 4])
    return ~total & 0xFFFFFFFF


def decode_footer(buf: bytes) -> VhdFooter:
    """Decode a footer; ImageError naming the problem if it is not a valid one."""
    if len(buf) != FOOTER_BYTES:
        raise ImageError(f"vhd: a footer is {FOOTER_BYTES} bytes, got {len(buf)}")
    if buf[:8] != FOOTER_COOKIE:
        raise ImageError(f"vhd: bad footer cookie {buf[:8]!r} (expected {FOOTER_COOKIE!r})")
    footer = VhdFooter(*_FOOTER.unpack_from(buf)[1:])
    if vhd_checksum(buf, _FOOTER_CHECKSUM_AT) != footer.checksum:
        raise ImageError("vhd: bad footer checksum")
    return footer


def parse_footer(b: bytes) -> VhdFooter | None:
    """The footer in ``b`` if ``b`` is one (cookie and checksum valid), else None."""
    try:
        return decode_footer(b)
    except ImageError:
        return None


def decode_dyn_header(buf: bytes) -> DynHeader:
    """Decode and check a dynamic disk header (cookie, checksum, block size)."""
    assert len(buf) == DYN_HEADER_BYTES
    cookie, _, table_offset, _, entries, block_size, checksum = _DYN_HEADER.unpack_from(buf)
    if cookie != DYN_HEADER_COOKIE:
        raise ImageError(
            f"vhd: bad dynamic disk header cookie {cookie!r} (expected {DYN_HEADER_COOKIE!r})"
        )
    if vhd_checksum(buf, _DYN_HEADER_CHECKSUM_AT) != checksum:
        raise ImageError("vhd: bad dynamic disk header checksum")
    if block_size & (block_size - 1) or not MIN_BLOCK_BYTES <= block_size <= MAX_BLOCK_BYTES:
        raise ImageError(
            f"vhd: block size {block_size} is not a power of two between "
            f"{MIN_BLOCK_BYTES} and {MAX_BLOCK_BYTES} bytes"
        )
    return DynHeader(table_offset, entries, block_size)


class SectorMask:
    """A block's sector bitmap: which 512-byte sectors of the block are stored.

    Bit ``i``, counting from the most significant bit of byte 0, is sector ``i``.
    """

    def __init__(self, bitmap: bytes, guest_length: int) -> None:
        self._bits = bitmap
        sectors = -(-guest_length // SECTOR_BYTES)
        full, rest = divmod(sectors, 8)
        head, tail = bitmap[:full], bitmap[full] if rest else 0
        tail_mask = (0xFF << (8 - rest)) & 0xFF
        self.all_set = head.count(0xFF) == full and tail & tail_mask == tail_mask
        self.none_set = head.count(0) == full and tail & tail_mask == 0

    def present(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """Maximal byte ranges within ``start..end`` (of the block's data) that are stored."""
        if self.all_set:
            yield start, end
            return
        if self.none_set:
            return
        run_from = -1
        for sector in range(start // SECTOR_BYTES, -(-end // SECTOR_BYTES)):
            lo = max(start, sector * SECTOR_BYTES)
            if self._bit(sector):
                if run_from < 0:
                    run_from = lo
            elif run_from >= 0:
                yield run_from, lo
                run_from = -1
        if run_from >= 0:
            yield run_from, end

    def _bit(self, sector: int) -> int:
        return (self._bits[sector >> 3] >> (7 - (sector & 7))) & 1
