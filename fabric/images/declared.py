"""The source formats a user may declare, and the check that the content keeps its word.

A declaration is a promise about the bytes to come (OpenStack Glance checks its
``disk_format`` the same way): content of another format is refused, never stored as
whatever detection makes of it. A qcow2 whose header was damaged in transit would
otherwise be detected as raw and kept as a disk full of qcow2 tables.

The check runs twice. When the reader is chosen from the first bytes, a reader that
cannot produce any allowed format fails at once, before anything is stored. At the end
the reader's final format must be allowed: only the raw reader changes its mind there
(a trailing fixed-VHD footer makes it "vhd").
"""

from __future__ import annotations

from fabric.images.base import ImageError, ImageReader

FORMATS = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "iso")
"""Every format a reader here reads, by the names the API uses."""
DISK_FORMATS = frozenset(FORMATS) - {"iso"}
ISO_MAGIC = "'CD001' at byte 32769"
"""Where an ISO 9660 image announces itself (its first volume descriptor), for messages."""


class FormatMismatch(ImageError):
    """The content is not of a declared format."""

    def __init__(self, allowed: frozenset[str], detected: str) -> None:
        self.allowed = allowed
        self.detected = detected
        super().__init__(f"the content is {detected}, not {' or '.join(sorted(allowed))}")


def possible_formats(reader: type[ImageReader]) -> frozenset[str]:
    """What a reader chosen from the first bytes may still report at the end."""
    if getattr(reader, "strips_vhd_footer", False):
        return frozenset({reader.format, "vhd"})
    return frozenset({reader.format})


def check_chosen(allowed: frozenset[str] | None, reader: type[ImageReader]) -> None:
    if allowed is not None and not possible_formats(reader) & allowed:
        raise FormatMismatch(allowed, reader.format)


def check_final(allowed: frozenset[str] | None, reader: ImageReader) -> None:
    if allowed is not None and reader.format not in allowed:
        raise FormatMismatch(allowed, reader.format)
