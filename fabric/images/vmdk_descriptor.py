"""The VMDK text descriptor: parsing it, and deciding whether we can serve the disk it describes.

A descriptor (VMware Virtual Disk Format 1.1, "The Descriptor File") is text, one item a
line: ``key=value`` or ``key = "value"`` settings (``version``, ``CID``, ``parentCID``,
``createType``, ``parentFileNameHint``...), extent lines
``ACCESS SECTORS TYPE "FILE" [OFFSET]`` and the disk database ``ddb.* = "..."``. ``#``
starts a comment. Embedded in a sparse extent it is NUL-padded to its sectors.

We accept exactly the self-contained single-file disks: ``createType`` monolithicSparse
or streamOptimized, one SPARSE extent covering the whole capacity, and no parent. Every
other shape refers to files or devices we were not given, and is refused as unsupported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fabric.images.base import ImageError, UnsupportedImage

NO_PARENT_CID = "ffffffff"
SELF_CONTAINED_TYPES = {
    "monolithicsparse": "monolithicSparse",
    "streamoptimized": "streamOptimized",
}
TEXT_DESCRIPTOR_MAX_BYTES = 64 * 1024
"""How much of a text-only descriptor file we read to say what it is before refusing it."""

_EXTENT = re.compile(
    r"^(?P<access>RW|RDONLY|NOACCESS)\s+(?P<sectors>\d{1,20})\s+(?P<kind>[A-Za-z]+)"
    r'(?:\s+"(?P<file>[^"]*)"(?:\s+(?P<offset>\d{1,20}))?)?\s*$'
)
_SETTING = re.compile(r'^(?P<key>[^\s="]+)\s*=\s*(?P<value>.*?)\s*$')


@dataclass(frozen=True, slots=True)
class ExtentLine:
    """One ``ACCESS SECTORS TYPE "FILE" [OFFSET]`` line."""

    access: str
    sectors: int
    kind: str
    filename: str | None
    offset: int | None


@dataclass(frozen=True, slots=True)
class Descriptor:
    """What a descriptor says; ``settings`` holds the non-``ddb.`` keys as written."""

    settings: dict[str, str] = field(default_factory=dict)
    extents: tuple[ExtentLine, ...] = ()
    ddb: dict[str, str] = field(default_factory=dict)

    @property
    def create_type(self) -> str | None:
        return self.settings.get("createType")

    @property
    def parent_cid(self) -> str | None:
        return self.settings.get("parentCID")


def parse_descriptor(raw: bytes) -> Descriptor:
    """Parse descriptor text (up to the first NUL); ImageError on a line we cannot read."""
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    settings: dict[str, str] = {}
    ddb: dict[str, str] = {}
    extents: list[ExtentLine] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if extent := _EXTENT.match(line):
            extents.append(_extent_line(extent))
        elif setting := _SETTING.match(line):
            key, value = setting["key"], _unquote(setting["value"])
            (ddb if key.startswith("ddb.") else settings)[key] = value
        else:
            raise ImageError(f"vmdk: descriptor line {number} is malformed: {line[:80]!r}")
    return Descriptor(settings=settings, extents=tuple(extents), ddb=ddb)


def check_embedded(desc: Descriptor, capacity_sectors: int, streamed: bool) -> None:
    """Refuse an embedded descriptor that does not describe this one self-contained file."""
    _check_create_type(desc, streamed)
    _check_parent(desc)
    _check_extent(desc, capacity_sectors)


def refuse_text_descriptor(raw: bytes) -> UnsupportedImage:
    """The error for a text-only descriptor file: it names other files we were not given."""
    try:
        desc = parse_descriptor(raw)
    except ImageError:
        desc = Descriptor()
    files = ", ".join(repr(e.filename) for e in desc.extents if e.filename) or "none listed"
    kind = desc.create_type or "unknown"
    return UnsupportedImage(
        f"vmdk: this is a descriptor-only file (createType {kind!r}) that refers to other "
        f"files ({files}); upload a single-file monolithicSparse or streamOptimized image"
    )


def looks_like_text_descriptor(head: bytes | bytearray) -> bool:
    """Whether the start of a file is descriptor text rather than a binary extent."""
    text = head.lstrip(b" \t\r\n")
    return text.startswith((b"# Disk DescriptorFile", b"#", b"version="))


def _check_create_type(desc: Descriptor, streamed: bool) -> None:
    create_type = desc.create_type
    if create_type is None:
        if not desc.settings and not desc.extents:
            raise UnsupportedImage(
                "vmdk: the embedded descriptor is empty: this file looks like one extent "
                "of a multi-file (split) disk, which needs its descriptor file"
            )
        raise ImageError("vmdk: the descriptor has no createType")
    canonical = SELF_CONTAINED_TYPES.get(create_type.lower())
    if canonical is None:
        raise UnsupportedImage(
            f"vmdk: createType {create_type!r} is not supported: only single-file "
            "monolithicSparse and streamOptimized disks are self-contained"
        )
    expected = "streamOptimized" if streamed else "monolithicSparse"
    if canonical != expected:
        raise ImageError(
            f"vmdk: the descriptor says createType {create_type!r} but the header "
            f"describes a {expected} extent"
        )


def _check_parent(desc: Descriptor) -> None:
    parent = desc.parent_cid
    if parent is not None and parent.lower() != NO_PARENT_CID:
        raise UnsupportedImage(
            f"vmdk: differencing disk (parentCID={parent}) needs its parent image"
        )
    if "parentFileNameHint" in desc.settings:
        hint = desc.settings["parentFileNameHint"]
        raise UnsupportedImage(f"vmdk: differencing disk needs its parent image {hint!r}")


def _check_extent(desc: Descriptor, capacity_sectors: int) -> None:
    if not desc.extents:
        raise ImageError("vmdk: the descriptor has no extent line")
    if len(desc.extents) > 1:
        raise UnsupportedImage(
            f"vmdk: the descriptor lists {len(desc.extents)} extents; only a single "
            "embedded extent is supported"
        )
    extent = desc.extents[0]
    if extent.kind.upper() != "SPARSE" or extent.filename is None or extent.offset is not None:
        raise UnsupportedImage(
            f"vmdk: extent type {extent.kind} refers to data outside this file; "
            "only the embedded SPARSE extent is supported"
        )
    if extent.access == "NOACCESS":
        raise UnsupportedImage("vmdk: the only extent is marked NOACCESS")
    if any(sep in extent.filename for sep in "/\\:") or not extent.filename:
        raise UnsupportedImage(
            f"vmdk: the extent names another file {extent.filename!r}, not this one"
        )
    if extent.sectors != capacity_sectors:
        raise ImageError(
            f"vmdk: the extent line says {extent.sectors} sectors but the header's "
            f"capacity is {capacity_sectors} sectors"
        )


def _extent_line(match: re.Match[str]) -> ExtentLine:
    offset = match["offset"]
    return ExtentLine(
        access=match["access"],
        sectors=int(match["sectors"]),
        kind=match["kind"],
        filename=match["file"],
        offset=int(offset) if offset is not None else None,
    )


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value
