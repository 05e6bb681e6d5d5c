"""Streaming reader for dynamic VHD images (Microsoft Virtual PC / Hyper-V "vpc").

Theory of operation
-------------------
A dynamic VHD is, in file order (qemu and Hyper-V both write it so)::

    footer copy (512) | dynamic header (1024) | BAT | block | block | ... | footer (512)

The reader walks it with the shared ``Walker`` (vhd_walker.py), one structure at a time:

1. the footer copy at 0: cookie, checksum, disk type (a differencing disk is refused),
   disk size (qemu's CHS rule, see vhd_format.py); it locates the dynamic header;
2. the dynamic header: cookie, checksum, block size, BAT size against the disk size;
   it locates the BAT;
3. the BAT: each allocated entry becomes a block (sector bitmap + data), sorted by file
   offset in bounded memory (vhd_keysort.py) and handed to the walker as the plan.
   Blocks may not overlap one another or the structures above.
4. the blocks stream through: sectors whose bitmap bit is set become guest runs,
   everything else reads as zeros (qemu ignores the bitmap; for the images it writes
   every bit is set, so both read the same).

At the end the last 512 bytes must be a valid footer matching the copy, lying after every
block; otherwise the file was truncated. qemu-img silently reads zeros for blocks past
the end of the file; we refuse them.

A *fixed* VHD has no copy at offset 0: it is a raw disk plus a footer, and raw.py
recognises it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from sys import byteorder

from fabric.images.base import (
    ImageError,
    ImageReader,
    ReaderLimits,
    Run,
    Spill,
    UnsupportedImage,
)
from fabric.images.vhd_format import (
    BAT_ENTRY_BYTES,
    BAT_UNALLOCATED,
    DISK_DIFFERENCING,
    DISK_DYNAMIC,
    DYN_HEADER_BYTES,
    FOOTER_BYTES,
    FOOTER_COOKIE,
    MAX_DISK_SECTORS,
    SECTOR_BYTES,
    DynHeader,
    VhdFooter,
    decode_dyn_header,
    decode_footer,
    parse_footer,
)
from fabric.images.vhd_keysort import KEY_BYTES, KeySorter
from fabric.images.vhd_walker import Extent, Walker

__all__ = ["VhdFooter", "VhdReader", "parse_footer", "sniff"]

BAT_ALIGN_ENTRIES = SECTOR_BYTES // BAT_ENTRY_BYTES
"""A BAT fills whole sectors; writers may count the padding entries."""
_INDEX_BITS = 32
"""Sort keys are ``sector offset << 32 | block index``."""


def sniff(head: bytes) -> bool:
    """A dynamic or differencing VHD starts with a copy of its footer."""
    return head[:8] == FOOTER_COOKIE


class VhdReader(ImageReader):
    """Dynamic VHD to raw runs; see the module docstring."""

    format = "vhd"

    def __init__(self, limits: ReaderLimits, spill: Spill) -> None:
        super().__init__(limits, spill)
        self._walker = Walker(self.format, limits, spill)
        self._footer: VhdFooter | None = None
        self._size: int | None = None
        self._tail = b""  # the last FOOTER_BYTES bytes seen
        self._walker.claim(0, FOOTER_BYTES, "the footer copy")
        self._walker.want(0, FOOTER_BYTES, "the footer copy", self._on_footer)

    @property
    def virtual_size(self) -> int | None:
        return self._size

    def feed(self, data: bytes) -> Iterator[Run]:
        self._tail = (self._tail + data[-FOOTER_BYTES:])[-FOOTER_BYTES:]
        yield from self._walker.feed(data)
        self.position = self._walker.position

    def finish(self) -> Iterator[Run]:
        yield from self._walker.finish()
        self._check_trailing_footer()

    # -- the structures, in file order ------------------------------------------------

    def _on_footer(self, buf: bytes) -> None:
        footer = decode_footer(buf)
        if footer.disk_type == DISK_DIFFERENCING:
            raise UnsupportedImage("vhd: differencing disk (it needs a parent image)")
        if footer.disk_type != DISK_DYNAMIC:
            raise ImageError(
                f"vhd: the footer copy at offset 0 has disk type {footer.disk_type}; "
                f"only dynamic disks ({DISK_DYNAMIC}) start with one"
            )
        size = footer.disk_bytes()
        if size > MAX_DISK_SECTORS * SECTOR_BYTES:
            raise ImageError(f"vhd: disk size {size} bytes exceeds the VHD maximum (2040 GiB)")
        self._size = self.check_virtual_size(size)
        self._footer = footer
        start = footer.data_offset
        self._walker.claim(start, DYN_HEADER_BYTES, "the dynamic disk header")
        self._walker.want(start, DYN_HEADER_BYTES, "the dynamic disk header", self._on_header)

    def _on_header(self, buf: bytes) -> None:
        header = decode_dyn_header(buf)
        self._check_table_size(header)
        padded = -(-header.bat_bytes // SECTOR_BYTES) * SECTOR_BYTES
        self._walker.claim(header.table_offset, padded, "the BAT")
        self._walker.want(
            header.table_offset,
            header.bat_bytes,
            "the BAT",
            lambda bat: self._on_bat(header, bat),
        )

    def _check_table_size(self, header: DynHeader) -> None:
        assert self._footer is not None and self._size is not None
        needed = -(-self._size // header.block_size)
        biggest = max(self._size, self._footer.current_size)
        allowed = -(-biggest // header.block_size)
        allowed = -(-allowed // BAT_ALIGN_ENTRIES) * BAT_ALIGN_ENTRIES
        if not needed <= header.max_table_entries <= allowed:
            raise ImageError(
                f"vhd: the BAT has {header.max_table_entries} entries but a disk of "
                f"{self._size} bytes in blocks of {header.block_size} needs {needed}"
            )
        if header.bat_bytes > self.limits.max_metadata_bytes:
            raise ImageError(
                f"vhd: a BAT of {header.bat_bytes} bytes exceeds the metadata limit of "
                f"{self.limits.max_metadata_bytes} bytes"
            )

    def _on_bat(self, header: DynHeader, buf: bytes) -> None:
        entries = array("I", buf)
        if byteorder == "little":
            entries.byteswap()
        allocated = len(entries) - entries.count(BAT_UNALLOCATED)
        if len(buf) + allocated * KEY_BYTES > self.limits.max_metadata_bytes:
            raise ImageError(
                f"vhd: {allocated} allocated blocks exceed the metadata limit of "
                f"{self.limits.max_metadata_bytes} bytes"
            )
        sorter = KeySorter()
        for index, sector in enumerate(entries):
            if sector != BAT_UNALLOCATED:
                sorter.add(sector << _INDEX_BITS | index)
        del entries
        self._walker.install(lambda: self._blocks(header, sorter))

    def _blocks(self, header: DynHeader, sorter: KeySorter) -> Iterator[Extent]:
        """The allocated blocks in file order."""
        assert self._size is not None
        block, bitmap = header.block_size, header.bitmap_bytes
        mask = (1 << _INDEX_BITS) - 1
        for key in sorter.merged():
            guest = (key & mask) * block
            guest_length = max(0, min(block, self._size - guest))
            yield Extent(
                file_offset=(key >> _INDEX_BITS) * SECTOR_BYTES,
                span=bitmap + block,
                guest_offset=guest,
                guest_length=guest_length,
                bitmap_bytes=bitmap if guest_length else 0,
            )

    def _check_trailing_footer(self) -> None:
        """The file ends with a footer that matches the copy and follows every block."""
        end = self._walker.position
        footer = parse_footer(self._tail) if len(self._tail) == FOOTER_BYTES else None
        copy = self._footer
        if footer is None or copy is None:
            raise ImageError(
                f"vhd: truncated: no valid footer at the end of the file ({end} bytes)"
            )
        if (footer.disk_type, footer.current_size) != (copy.disk_type, copy.current_size):
            raise ImageError("vhd: the footer at the end does not match the copy at offset 0")
        if self._walker.max_span_end > end - FOOTER_BYTES:
            raise ImageError(
                f"vhd: truncated: a block extends to byte {self._walker.max_span_end}, into "
                f"the footer or past the end of the file ({end} bytes)"
            )
