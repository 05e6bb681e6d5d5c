"""The VMDK hosted sparse extent header ("KDMV"): on-disk constants, parsing, validation.

Layout (VMware Virtual Disk Format 1.1, "Hosted Sparse Extent Header"; qemu's
``VMDK4Header`` in block/vmdk.c), 512 bytes, little endian, offsets in sectors of 512 bytes:

    0  magicNumber "KDMV"      4  version (1, 2 = zeroed-grain GTEs, 3 = CBT/stream)
    8  flags                  12  capacity          20  grainSize
   28  descriptorOffset       36  descriptorSize    44  numGTEsPerGT (u32)
   48  rgdOffset              56  gdOffset          64  overHead
   72  uncleanShutdown (u8)   73  "\\n \\r\\n" newline-detection bytes
   77  compressAlgorithm (u16)   then padding to 512

Flags in the low 16 bits are compatible (a reader may ignore unknown ones); flags in the
high 16 bits are incompatible (a reader must refuse unknown ones) -- VMware's open-vmdk
reader applies the same rule. The same structure is repeated as the *footer* of a
stream-optimized extent whose header says ``gdOffset = GD_AT_END``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from fabric.images.base import ImageError, UnsupportedImage

SECTOR_BYTES = 512
HEADER_BYTES = 512
MAGIC = b"KDMV"
COWD_MAGIC = b"COWD"  # VMware 3 / ESX vmfsSparse extents: a different format
MAX_VERSION = 3

FLAG_NEWLINE_TEST = 1 << 0
FLAG_REDUNDANT_GD = 1 << 1
FLAG_ZERO_GRAIN_GTE = 1 << 2
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17
INCOMPATIBLE_FLAGS_MASK = 0xFFFF0000
KNOWN_INCOMPATIBLE_FLAGS = FLAG_COMPRESSED | FLAG_MARKERS

COMPRESSION_NONE = 0
COMPRESSION_DEFLATE = 1

GD_AT_END = 0xFFFF_FFFF_FFFF_FFFF
"""gdOffset of a stream-optimized header whose real grain directory is in the footer."""

NEWLINE_TEST_BYTES = b"\n \r\n"
MIN_GRAIN_SECTORS = 8  # 4 KiB: the spec's minimum
MAX_GRAIN_SECTORS = 2048  # 1 MiB: runs and inflated grains stay modest
MAX_GTES_PER_GT = 512  # the spec's value, and qemu's upper bound
GTE_BYTES = 4  # grain directory and grain table entries are u32 sector numbers
MAX_GRAINS = 1 << 32  # grain indexes are packed into 32 bits

_LAYOUT = struct.Struct("<4sIIQQQQIQQQB4sH")


@dataclass(frozen=True, slots=True)
class SparseHeader:
    """A validated sparse extent header; sizes in sectors unless the name says bytes."""

    version: int
    flags: int
    capacity_sectors: int
    grain_sectors: int
    descriptor_sector: int
    descriptor_sectors: int
    gtes_per_gt: int
    rgd_sector: int
    gd_sector: int
    overhead_sectors: int
    compression: int

    @property
    def virtual_bytes(self) -> int:
        return self.capacity_sectors * SECTOR_BYTES

    @property
    def grain_bytes(self) -> int:
        return self.grain_sectors * SECTOR_BYTES

    @property
    def grain_count(self) -> int:
        return -(-self.capacity_sectors // self.grain_sectors)

    @property
    def gd_entries(self) -> int:
        return -(-self.grain_count // self.gtes_per_gt)

    @property
    def gd_bytes(self) -> int:
        return self.gd_entries * GTE_BYTES

    @property
    def gt_bytes(self) -> int:
        return self.gtes_per_gt * GTE_BYTES

    @property
    def has_markers(self) -> bool:
        return bool(self.flags & FLAG_MARKERS)

    @property
    def gd_at_end(self) -> bool:
        return self.gd_sector == GD_AT_END

    @property
    def descriptor_start_bytes(self) -> int:
        return self.descriptor_sector * SECTOR_BYTES

    @property
    def descriptor_end_bytes(self) -> int:
        return (self.descriptor_sector + self.descriptor_sectors) * SECTOR_BYTES

    @property
    def gd_start_bytes(self) -> int:
        return self.gd_sector * SECTOR_BYTES

    @property
    def overhead_bytes(self) -> int:
        return self.overhead_sectors * SECTOR_BYTES

    def grain_needed_bytes(self, grain_index: int) -> int:
        """Guest bytes grain ``grain_index`` holds: a full grain, or less for the last one."""
        return min(self.grain_bytes, self.virtual_bytes - grain_index * self.grain_bytes)


def parse_header(raw: bytes, what: str = "header") -> SparseHeader:
    """Parse and validate the 512-byte sparse extent header (or footer) in ``raw``."""
    assert len(raw) >= HEADER_BYTES, "caller buffers a whole header"
    (magic, version, flags, capacity, grain, desc_off, desc_size, gtes, rgd, gd, overhead,
     _unclean, newline, compression) = _LAYOUT.unpack_from(raw)  # fmt: skip
    _check_magic(magic, what)
    _check_version(version, what)
    _check_flags(flags, newline, compression, what)
    _check_geometry(capacity, grain, gtes, what)
    return SparseHeader(
        version=version,
        flags=flags,
        capacity_sectors=capacity,
        grain_sectors=grain,
        descriptor_sector=desc_off,
        descriptor_sectors=desc_size,
        gtes_per_gt=gtes,
        rgd_sector=rgd,
        gd_sector=gd,
        overhead_sectors=overhead,
        compression=compression,
    )


def _check_magic(magic: bytes, what: str) -> None:
    if magic == COWD_MAGIC:
        raise UnsupportedImage(
            "vmdk: this is a VMware 3 'COWD' sparse extent (vmfsSparse), which is not supported"
        )
    if magic != MAGIC:
        raise ImageError(f"vmdk: bad magic {magic!r} in the {what}: not a VMDK sparse extent")


def _check_version(version: int, what: str) -> None:
    if version == 0:
        raise ImageError(f"vmdk: {what} version 0 is invalid")
    if version > MAX_VERSION:
        raise UnsupportedImage(f"vmdk: {what} version {version} is newer than we support (3)")


def _check_flags(flags: int, newline: bytes, compression: int, what: str) -> None:
    unknown = flags & INCOMPATIBLE_FLAGS_MASK & ~KNOWN_INCOMPATIBLE_FLAGS
    if unknown:
        raise UnsupportedImage(f"vmdk: unknown incompatible {what} flags {unknown:#x}")
    if flags & FLAG_NEWLINE_TEST and newline != NEWLINE_TEST_BYTES:
        raise ImageError(
            "vmdk: the header's newline-detection bytes are damaged "
            "(was the file transferred in text mode?)"
        )
    if compression not in (COMPRESSION_NONE, COMPRESSION_DEFLATE):
        raise UnsupportedImage(f"vmdk: unsupported compression algorithm {compression}")
    compressed = bool(flags & FLAG_COMPRESSED)
    if compressed != (compression == COMPRESSION_DEFLATE):
        raise ImageError(
            f"vmdk: {what} compressed flag ({compressed}) disagrees with "
            f"compression algorithm {compression}"
        )
    if compressed != bool(flags & FLAG_MARKERS):
        raise UnsupportedImage(
            "vmdk: compressed grains without grain markers (or markers without "
            "compression) are not supported"
        )


def _check_geometry(capacity: int, grain: int, gtes: int, what: str) -> None:
    if capacity == 0:
        raise ImageError(f"vmdk: {what} capacity is zero")
    if grain & (grain - 1) or not MIN_GRAIN_SECTORS <= grain <= MAX_GRAIN_SECTORS:
        raise ImageError(
            f"vmdk: grain size of {grain} sectors is not a power of two between "
            f"{MIN_GRAIN_SECTORS} and {MAX_GRAIN_SECTORS} sectors"
        )
    if not 1 <= gtes <= MAX_GTES_PER_GT:
        raise ImageError(f"vmdk: {gtes} entries per grain table (must be 1..{MAX_GTES_PER_GT})")


def check_grain_count(header: SparseHeader) -> None:
    """Refuse more grains than a 32-bit grain index holds (only with raised size limits)."""
    if header.grain_count > MAX_GRAINS:
        raise ImageError(
            f"vmdk: a capacity of {header.capacity_sectors} sectors in grains of "
            f"{header.grain_sectors} sectors needs more than {MAX_GRAINS} grains"
        )
