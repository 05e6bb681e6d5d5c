"""On-disk structures of the VHDX format ([MS-VHDX] v1.0), decoded and checked.

Theory of operation
-------------------
A VHDX file starts with a 1 MiB *header section*::

    0      file identifier ("vhdxfile")
    64K    header 1 (4 KiB checked by CRC-32C)   128K  header 2
    192K   region table 1 (64 KiB, CRC-32C)       256K  region table 2

The current header is the valid one (signature "head", version 1, CRC) with the higher
sequence number; it locates the *log*. The region table locates the *BAT* and the
*metadata region* (and possibly regions from later versions: an unknown one marked
required makes the file unreadable). The metadata region starts with a table of items;
we read the file parameters (block size, flags), the virtual disk size and the logical
and physical sector sizes. All integers are little-endian; GUIDs are in Microsoft's
mixed-endian binary form (``uuid.UUID.bytes_le``).

The BAT holds one 64-bit entry per payload block, state in bits 0-2 and the file offset
in MiB in bits 20-63; after every ``chunk_ratio`` payload entries comes one entry for a
sector bitmap block (used only by differencing disks).

This module only decodes bytes; vhdx.py streams the file.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from fabric.images.base import ImageError, KiB, MiB, TiB, UnsupportedImage
from fabric.images.vhdx_crc32c import checksum_with_field_zeroed

FILE_SIGNATURE = b"vhdxfile"
HEADER_SECTION_BYTES = 1 * MiB
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
HEADER_BYTES = 4 * KiB
REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)
REGION_TABLE_BYTES = 64 * KiB
METADATA_TABLE_BYTES = 64 * KiB
MAX_TABLE_ENTRIES = 2047
"""Both the region table and the metadata table hold at most this many entries."""
MAX_METADATA_ITEM_BYTES = 1 * MiB
ALIGN_BYTES = 1 * MiB
"""Regions and the log sit on 1 MiB boundaries; BAT offsets count in MiB."""
MIN_BLOCK_BYTES = 1 * MiB
MAX_BLOCK_BYTES = 256 * MiB
MAX_DISK_BYTES = 64 * TiB
SECTOR_SIZES = (512, 4096)
SECTORS_PER_CHUNK = 1 << 23
"""Sectors described by one 1 MiB sector bitmap block."""

BAT_ENTRY_BYTES = 8
STATE_MASK = 0x7
OFFSET_SHIFT = 20
PAYLOAD_NOT_PRESENT = 0
PAYLOAD_UNDEFINED = 1
PAYLOAD_ZERO = 2
PAYLOAD_UNMAPPED = 3
PAYLOAD_UNMAPPED_V095 = 5
"""UNMAPPED in the v0.95 draft; qemu still reads it as zeros, so do we."""
PAYLOAD_FULLY_PRESENT = 6
PAYLOAD_PARTIALLY_PRESENT = 7
ZERO_STATES = frozenset(
    {PAYLOAD_NOT_PRESENT, PAYLOAD_UNDEFINED, PAYLOAD_ZERO, PAYLOAD_UNMAPPED, PAYLOAD_UNMAPPED_V095}
)


def _guid(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


BAT_REGION = _guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION = _guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = _guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = _guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE_83_DATA = _guid("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR_SIZE = _guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_SIZE = _guid("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = _guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
ZERO_GUID = bytes(16)

ITEM_NAMES = {
    FILE_PARAMETERS: "file parameters",
    VIRTUAL_DISK_SIZE: "virtual disk size",
    PAGE_83_DATA: "page 83 data",
    LOGICAL_SECTOR_SIZE: "logical sector size",
    PHYSICAL_SECTOR_SIZE: "physical sector size",
    PARENT_LOCATOR: "parent locator",
}
ITEM_BYTES = {
    FILE_PARAMETERS: 8,
    VIRTUAL_DISK_SIZE: 8,
    LOGICAL_SECTOR_SIZE: 4,
    PHYSICAL_SECTOR_SIZE: 4,
}
"""The items the reader needs, with the bytes it reads of each."""

_HEADER = struct.Struct("<4sIQ16s16s16sHHIQ")
_REGION_HEADER = struct.Struct("<4sII4x")
_REGION_ENTRY = struct.Struct("<16sQII")
_METADATA_HEADER = struct.Struct("<8s2xH20x")
_METADATA_ENTRY = struct.Struct("<16sIII4x")
_CHECKSUM_AT = 4
_REQUIRED = 0x1
_ITEM_REQUIRED = 0x4
_LEAVE_BLOCKS_ALLOCATED = 0x1
_HAS_PARENT = 0x2


@dataclass(frozen=True, slots=True)
class VhdxHeader:
    sequence_number: int
    log_guid: bytes
    log_version: int
    log_length: int
    log_offset: int
    fields: bytes
    """The decoded part, to tell identical headers apart from conflicting ones."""


@dataclass(frozen=True, slots=True)
class Region:
    guid: bytes
    file_offset: int
    length: int
    required: bool


@dataclass(frozen=True, slots=True)
class MetadataItem:
    guid: bytes
    offset: int
    """Relative to the start of the metadata region."""
    length: int


@dataclass(frozen=True, slots=True)
class DiskParams:
    """What the metadata items say about the virtual disk."""

    block_size: int
    leave_blocks_allocated: bool
    virtual_size: int
    logical_sector_size: int
    physical_sector_size: int

    @property
    def chunk_ratio(self) -> int:
        """Payload blocks per sector bitmap block."""
        return SECTORS_PER_CHUNK * self.logical_sector_size // self.block_size

    @property
    def data_blocks(self) -> int:
        return -(-self.virtual_size // self.block_size)

    @property
    def bat_entries(self) -> int:
        """Entries a dynamic or fixed disk's BAT has: payload plus interleaved bitmaps."""
        blocks = self.data_blocks
        return blocks + (blocks - 1) // self.chunk_ratio if blocks else 0

    def bat_index(self, block: int) -> int:
        """Where payload block ``block`` sits in the BAT, past the bitmap entries."""
        return block + block // self.chunk_ratio


def decode_header(buf: bytes) -> VhdxHeader | None:
    """A header if ``buf`` is a valid one (signature, version 1, CRC-32C), else None."""
    sig, crc, seq, _, _, log_guid, log_version, version, log_length, log_offset = (
        _HEADER.unpack_from(buf)
    )
    if sig != b"head" or version != 1 or checksum_with_field_zeroed(buf, _CHECKSUM_AT) != crc:
        return None
    return VhdxHeader(seq, log_guid, log_version, log_length, log_offset, buf[: _HEADER.size])


def current_header(first: VhdxHeader | None, second: VhdxHeader | None) -> VhdxHeader:
    """The valid header with the higher sequence number (equal ones must agree)."""
    if first is None and second is None:
        raise ImageError("vhdx: no valid header (bad signature, version or CRC-32C in both)")
    if first is None or second is None:
        current = first or second
        assert current is not None
        return current
    if first.sequence_number == second.sequence_number and first.fields != second.fields:
        raise ImageError("vhdx: the two headers differ but have the same sequence number")
    return first if first.sequence_number >= second.sequence_number else second


def check_log(header: VhdxHeader) -> None:
    """Refuse a malformed log location, or a log that must be replayed first."""
    if header.log_offset < ALIGN_BYTES or header.log_offset % ALIGN_BYTES:
        raise ImageError(f"vhdx: log offset {header.log_offset} is not a whole MiB past 1 MiB")
    if header.log_length % ALIGN_BYTES or header.log_version != 0:
        raise ImageError(
            f"vhdx: bad log description (length {header.log_length}, version {header.log_version})"
        )
    if header.log_guid != ZERO_GUID and header.log_length:
        raise UnsupportedImage(
            "vhdx: the image needs log replay (its log is not empty); open it read-write "
            "once in Hyper-V or run 'qemu-img check -r all' on it, then upload it again"
        )


def decode_region_table(buf: bytes) -> list[Region] | None:
    """The entries if ``buf`` is a valid region table (signature, CRC-32C), else None."""
    sig, crc, count = _REGION_HEADER.unpack_from(buf)
    if sig != b"regi" or checksum_with_field_zeroed(buf, _CHECKSUM_AT) != crc:
        return None
    if count > MAX_TABLE_ENTRIES:
        raise ImageError(f"vhdx: region table claims {count} entries (at most 2047)")
    entries = _REGION_ENTRY.iter_unpack(
        buf[_REGION_HEADER.size : _REGION_HEADER.size + count * _REGION_ENTRY.size]
    )
    return [Region(g, off, length, bool(bits & _REQUIRED)) for g, off, length, bits in entries]


def known_regions(regions: list[Region]) -> tuple[Region, Region]:
    """The BAT and metadata regions; refuse duplicates and unknown required regions."""
    found: dict[bytes, Region] = {}
    for region in regions:
        if region.guid in (BAT_REGION, METADATA_REGION):
            if region.guid in found:
                raise ImageError("vhdx: the region table lists the BAT or metadata twice")
            found[region.guid] = region
        elif region.required:
            raise UnsupportedImage(
                f"vhdx: unknown required region {uuid.UUID(bytes_le=region.guid)}"
            )
    if BAT_REGION not in found or METADATA_REGION not in found:
        raise ImageError("vhdx: the region table lacks the BAT or the metadata region")
    return found[BAT_REGION], found[METADATA_REGION]


def decode_metadata_table(buf: bytes, region_length: int) -> dict[bytes, MetadataItem]:
    """The known items of a metadata table; refuse unknown required ones."""
    sig, count = _METADATA_HEADER.unpack_from(buf)
    if sig != b"metadata":
        raise ImageError(f"vhdx: bad metadata table signature {sig!r}")
    if count > MAX_TABLE_ENTRIES:
        raise ImageError(f"vhdx: metadata table claims {count} entries (at most 2047)")
    items: dict[bytes, MetadataItem] = {}
    start = _METADATA_HEADER.size
    for guid, offset, length, flags in _METADATA_ENTRY.iter_unpack(
        buf[start : start + count * _METADATA_ENTRY.size]
    ):
        if guid not in ITEM_NAMES:
            if flags & _ITEM_REQUIRED:
                raise UnsupportedImage(
                    f"vhdx: unknown required metadata item {uuid.UUID(bytes_le=guid)}"
                )
            continue
        if guid in items:
            raise ImageError(f"vhdx: metadata item {ITEM_NAMES[guid]} appears twice")
        _check_item_place(ITEM_NAMES[guid], offset, length, region_length)
        items[guid] = MetadataItem(guid, offset, length)
    for guid, need in ITEM_BYTES.items():
        if guid not in items:
            raise ImageError(f"vhdx: metadata item {ITEM_NAMES[guid]} is missing")
        if items[guid].length < need:
            raise ImageError(f"vhdx: metadata item {ITEM_NAMES[guid]} is too short")
    return items


def _check_item_place(name: str, offset: int, length: int, region_length: int) -> None:
    if length == 0:
        return
    fits = offset >= METADATA_TABLE_BYTES and offset + length <= region_length
    if not fits or length > MAX_METADATA_ITEM_BYTES:
        raise ImageError(
            f"vhdx: metadata item {name} (offset {offset}, {length} bytes) lies outside "
            f"the metadata region ({region_length} bytes, table {METADATA_TABLE_BYTES})"
        )


def decode_params(values: dict[bytes, bytes]) -> DiskParams:
    """Disk parameters from the item bytes; refuse a differencing disk."""
    block_size, flags = struct.unpack_from("<II", values[FILE_PARAMETERS])
    if flags & _HAS_PARENT:
        raise UnsupportedImage("vhdx: differencing disk (it has a parent image)")
    (size,) = struct.unpack_from("<Q", values[VIRTUAL_DISK_SIZE])
    (logical,) = struct.unpack_from("<I", values[LOGICAL_SECTOR_SIZE])
    (physical,) = struct.unpack_from("<I", values[PHYSICAL_SECTOR_SIZE])
    if block_size & (block_size - 1) or not MIN_BLOCK_BYTES <= block_size <= MAX_BLOCK_BYTES:
        raise ImageError(
            f"vhdx: block size {block_size} is not a power of two from 1 MiB to 256 MiB"
        )
    if logical not in SECTOR_SIZES or physical not in SECTOR_SIZES:
        raise ImageError(
            f"vhdx: sector sizes {logical}/{physical} (logical/physical) are not 512 or 4096"
        )
    if size % logical or size > MAX_DISK_BYTES:
        raise ImageError(
            f"vhdx: virtual disk size {size} is not a multiple of the {logical}-byte sector "
            "or exceeds 64 TiB"
        )
    return DiskParams(block_size, bool(flags & _LEAVE_BLOCKS_ALLOCATED), size, logical, physical)
