"""Streaming readers for raw disks, ISO images and fixed VHDs.

Theory of operation
-------------------
A raw image *is* the disk: byte ``i`` of the file is guest byte ``i``. The reader passes
bytes through as they come (coalesced into modest runs, all-zero granules left out as
holes, see vhd_runs.py) and learns the size only at the end.

A *fixed* VHD is a raw disk followed by a 512-byte VHD footer, and nothing at the start
says so. So ``RawReader`` always holds back the last 512 bytes it has seen. At the end,
if they are a valid footer (cookie and checksum) of a fixed disk whose ``current_size``
equals the bytes before it, they are dropped and the reader reports ``format = "vhd"``;
otherwise they are ordinary disk bytes. Requiring the exact size match keeps a raw disk
that merely ends in footer-like bytes whole.

A disk is whole sectors: a raw source whose size is not a multiple of ``SECTOR_BYTES``
is padded with zeros to the next sector, as ``qemu-img convert`` does, and the reader
says how many it added (``padded_bytes``). The zeros cost nothing: they are a hole.

``IsoReader`` is the same pass-through without the footer rule: an ISO never carries one.
"""

from __future__ import annotations

from collections.abc import Iterator

from fabric.images.base import SECTOR_BYTES, ImageReader, ReaderLimits, Run, Spill, frozen_bytes
from fabric.images.vhd_format import DISK_FIXED, FOOTER_BYTES, parse_footer
from fabric.images.vhd_runs import RunBuffer


class RawReader(ImageReader):
    """Raw disk to runs; recognises and strips a fixed VHD's footer (module docstring)."""

    format = "raw"
    strips_vhd_footer = True
    """Whether a trailing fixed-VHD footer is recognised and dropped."""

    def __init__(self, limits: ReaderLimits, spill: Spill) -> None:
        super().__init__(limits, spill)
        self._runs = RunBuffer()
        self._held = b""  # the last bytes seen, not yet passed on
        self._emitted = 0  # guest bytes passed on (or skipped as zeros) so far
        self._size: int | None = None

    @property
    def virtual_size(self) -> int | None:
        return self._size

    def feed(self, data: bytes) -> Iterator[Run]:
        data = frozen_bytes(data)
        self.position += len(data)
        if self.position > self.limits.max_virtual_bytes + FOOTER_BYTES:
            self.check_virtual_size(self.position)
        keep = FOOTER_BYTES if self.strips_vhd_footer else 0
        if len(data) < keep:
            pending = self._held + data
            cut = len(pending) - keep
            if cut > 0:
                yield from self._pass(memoryview(pending)[:cut])
            self._held = pending[max(cut, 0) :]
            return
        # The held bytes and all but the last ``keep`` of ``data`` are disk bytes: they
        # pass on as views of ``data``, which is never joined to the held bytes.
        if self._held:
            yield from self._pass(memoryview(self._held))
        yield from self._pass(memoryview(data)[: len(data) - keep])
        self._held = data[len(data) - keep :]

    def _pass(self, view: memoryview) -> Iterator[Run]:
        yield from self._runs.add(self._emitted, view)
        self._emitted += len(view)

    def finish(self) -> Iterator[Run]:
        if self._is_fixed_vhd_footer(self._held):
            self.format = "vhd"
        else:
            yield from self._runs.add(self._emitted, self._held)
            self._emitted += len(self._held)
        self._held = b""
        self.padded_bytes = -self._emitted % SECTOR_BYTES
        self._size = self.check_virtual_size(self._emitted + self.padded_bytes)
        yield from self._runs.flush()

    def _is_fixed_vhd_footer(self, tail: bytes) -> bool:
        if not self.strips_vhd_footer or len(tail) != FOOTER_BYTES:
            return False
        footer = parse_footer(tail)
        return (
            footer is not None
            and footer.disk_type == DISK_FIXED
            and footer.current_size == self._emitted
        )


class IsoReader(RawReader):
    """An ISO 9660 image is a raw disk; it never ends in a VHD footer."""

    format = "iso"
    strips_vhd_footer = False
