"""What every image format reader shares: the sans-I/O contract, its errors and limits.

Theory of operation
-------------------
A reader turns the bytes of an image file, fed in order from offset 0 in chunks of any
size, into *runs* of the raw disk: ``Run(offset, data)`` means "the guest bytes at
``offset`` are ``data``". Everything the reader does not emit reads as zeros (holes).
Runs may come in any guest order and never overlap one another.

    reader = Qcow2Reader(limits, spill)
    for chunk in source:                 # any chunk sizes, 0 < len(chunk)
        for run in reader.feed(chunk):   # a generator: consume it fully before feeding again
            store(run.offset, run.data)
    for run in reader.finish():          # end of file: emits what is left, or raises
        store(run.offset, run.data)

``feed`` and ``finish`` are generators so that a chunk holding many compressed clusters
never has to be expanded in memory all at once. A reader never opens a file, a socket or
a URL: an image cannot make the service read anything but the bytes it was given.

Data that arrives before the table that maps it (allowed by most formats, rare in
practice) goes to the injected ``Spill`` area, which the node backs with a file and
tests back with memory; ``limits.max_spill_bytes`` caps it.

Errors: ``ImageError`` for a malformed, truncated or hostile image (the caller answers
4xx with its message); ``UnsupportedImage`` (a subclass) for a well-formed image that
uses a feature we refuse (backing file, encryption, differencing disk, ...). Any other
exception out of a reader is a bug in the reader.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB


class ImageError(Exception):
    """The image is malformed, truncated or hostile (the uploader's fault: a 4xx)."""


class UnsupportedImage(ImageError):
    """The image is well formed but uses a feature the service refuses."""


RunData = bytes | memoryview
"""A run's bytes: ``bytes``, or a read-only view of bytes that nobody changes (a piece of
a chunk the reader was fed, or of a cluster it inflated), so it can be kept as it is."""


@dataclass(frozen=True, slots=True)
class Run:
    """Guest bytes ``data`` at guest byte ``offset`` of the raw disk.

    Readers hand out views rather than copies: every copy of a gigabyte costs a gigabyte
    of fresh memory, and on a busy node page faults are most of what a copy costs.
    """

    offset: int
    data: RunData


ZERO_BLOCK = bytes(2 * MiB)
"""Compared against, never written: untouched zero pages cost no memory."""


def is_zero(data: RunData) -> bool:
    """Whether ``data`` holds only zero bytes (memcmp speed: stops at the first non-zero)."""
    view = memoryview(data)
    step = len(ZERO_BLOCK)
    return all(ZERO_BLOCK.startswith(view[at : at + step]) for at in range(0, len(view), step))


def frozen_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """``data`` as bytes that cannot change under the views a reader keeps of it."""
    return data if type(data) is bytes else bytes(data)


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    """Bounds that hold for every input, however hostile."""

    max_virtual_bytes: int = 16 * TiB
    """Largest virtual disk accepted; a bigger header is refused as absurd."""
    max_spill_bytes: int = 4 * GiB
    """Largest amount of not-yet-mapped data held in the spill area."""
    max_metadata_bytes: int = 256 * MiB
    """Largest amount of table/metadata state a reader keeps in memory."""
    max_header_bytes: int = 4 * MiB
    """Largest header/descriptor region read before data starts (VMDK descriptor etc.)."""


class Spill(Protocol):
    """A bounded, keyed store for file ranges that arrived before their mapping."""

    def put(self, key: int, data: bytes) -> None:
        """Keep ``data`` under ``key`` (a file offset); keys are unique."""

    def take(self, key: int) -> bytes:
        """Return and forget the data kept under ``key``; KeyError if absent."""

    def keys(self) -> list[int]:
        """Keys currently held, ascending."""

    @property
    def held_bytes(self) -> int:
        """Total bytes currently held."""


class MemorySpill:
    """Spill area in memory: for tests and small images."""

    def __init__(self) -> None:
        self._items: dict[int, bytes] = {}
        self._held = 0

    def put(self, key: int, data: bytes) -> None:
        assert key not in self._items, f"spill key {key} stored twice"
        self._items[key] = bytes(data)
        self._held += len(data)

    def take(self, key: int) -> bytes:
        data = self._items.pop(key)
        self._held -= len(data)
        return data

    def keys(self) -> list[int]:
        return sorted(self._items)

    @property
    def held_bytes(self) -> int:
        return self._held


class MetadataBudget:
    """Bytes of image tables a reader holds in memory; ImageError past the limit.

    Every reader that keeps per-cluster or per-grain state charges it here, so a header
    that claims a huge table is refused before the table is ever built.
    """

    def __init__(self, fmt: str, limit_bytes: int) -> None:
        self.fmt = fmt
        self.limit_bytes = limit_bytes
        self.used_bytes = 0

    def charge(self, nbytes: int, what: str) -> None:
        if self.used_bytes + nbytes > self.limit_bytes:
            raise ImageError(
                f"{self.fmt}: {what} would need {self.used_bytes + nbytes} bytes of table "
                f"memory, over the limit of {self.limit_bytes} bytes (max_metadata_bytes)"
            )
        self.used_bytes += nbytes

    def release(self, nbytes: int) -> None:
        self.used_bytes -= nbytes
        assert self.used_bytes >= 0, f"{self.fmt}: released more table memory than charged"


SECTOR_BYTES = 512
"""A disk is a whole number of sectors: a raw source is padded to the next one."""


class ImageReader(ABC):
    """A streaming converter from one source format to raw guest runs."""

    #: short format name: "qcow2", "vmdk", "vhd", "vhdx", "raw", "iso"
    format: str = ""
    padded_bytes: int = 0
    """Zeros added after the source's last byte to end the disk on a whole sector."""

    def __init__(self, limits: ReaderLimits, spill: Spill) -> None:
        self.limits = limits
        self.spill = spill
        self.position = 0
        """How many source bytes have been fed so far."""

    @property
    @abstractmethod
    def virtual_size(self) -> int | None:
        """Size of the raw disk in bytes, once the header has been parsed."""

    @abstractmethod
    def feed(self, data: bytes) -> Iterator[Run]:
        """Consume the next source bytes; yield the runs they complete.

        Runs may be views of ``data`` (which is copied first if it is not ``bytes``).
        """

    @abstractmethod
    def finish(self) -> Iterator[Run]:
        """The source has ended: yield what is left, or raise ImageError."""

    def check_virtual_size(self, size: int) -> int:
        """Refuse a header's virtual size that is negative or absurd."""
        if size < 0:
            raise ImageError(f"{self.format}: negative virtual size {size}")
        if size > self.limits.max_virtual_bytes:
            raise ImageError(
                f"{self.format}: virtual size {size} bytes exceeds the limit of "
                f"{self.limits.max_virtual_bytes} bytes"
            )
        return size
