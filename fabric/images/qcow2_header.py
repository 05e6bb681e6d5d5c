"""The qcow2 file header: parse it from the first bytes of the file, refuse what we can't read.

The header sits at offset 0 of the first cluster (qemu's ``docs/interop/qcow2.rst``):
72 fixed bytes in version 2, ``header_length`` (at least 104) in version 3, then header
extensions up to the end of the first cluster. ``parse_header`` is called on a growing
prefix of the file; it answers either the parsed ``Header`` or how many bytes it needs
before it can decide. It never asks for more than the first cluster, nor more than
``limits.max_header_bytes``.

Everything a reader refuses about an image it can refuse from the header alone is refused
here: bad magic or version, cluster size, unknown or unsupported feature bits, encryption,
backing files, an absurd virtual size and an L1 table inconsistent with it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from fabric.images.base import ImageError, ReaderLimits, UnsupportedImage

MAGIC = b"QFI\xfb"

V2_HEADER_BYTES = 72
V3_MIN_HEADER_BYTES = 104
COMPRESSION_TYPE_AT = 104
"""Byte offset of the v3 ``compression_type`` field (present if header_length > 104)."""

MIN_CLUSTER_BITS = 9  # 512-byte clusters
MAX_CLUSTER_BITS = 21  # 2 MiB: qemu's implementation limit
MIN_EXTENDED_L2_CLUSTER_BITS = 14  # extended L2 entries need clusters of 16 KiB or more
MAX_REFCOUNT_ORDER = 6  # 64-bit refcounts

L1_ENTRY_BYTES = 8

# incompatible_features bits
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTENDED_L2 = 1 << 4
INCOMPAT_KNOWN = (
    INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_DATA_FILE
    | INCOMPAT_COMPRESSION
    | INCOMPAT_EXTENDED_L2
)

COMPRESSION_ZLIB = 0
COMPRESSION_ZSTD = 1
COMPRESSION_NAMES = {COMPRESSION_ZLIB: "zlib", COMPRESSION_ZSTD: "zstd"}

CRYPT_NAMES = {1: "AES", 2: "LUKS"}

EXT_END = 0x00000000
EXT_FEATURE_NAMES = 0x6803F857
EXT_HEADER_BYTES = 8
FEATURE_NAME_ENTRY_BYTES = 48
FEATURE_TYPE_INCOMPATIBLE = 0

_FIXED = struct.Struct(">4sIQIIQIIQQIIQ")  # the 72 bytes every version has
_V3 = struct.Struct(">QQQII")  # bytes 72..104
_EXT = struct.Struct(">II")


@dataclass(frozen=True, slots=True)
class Header:
    """What the reader needs from the header; everything else is validated and dropped."""

    version: int
    cluster_bits: int
    virtual_bytes: int
    l1_entries: int
    """Entries in the active L1 table, as the header claims."""
    l1_offset: int
    extended_l2: bool
    compression: int
    """COMPRESSION_ZLIB or COMPRESSION_ZSTD."""

    @property
    def cluster_bytes(self) -> int:
        return 1 << self.cluster_bits

    @property
    def l2_entry_bytes(self) -> int:
        return 16 if self.extended_l2 else 8

    @property
    def l2_entries(self) -> int:
        """Entries in one L2 table (one cluster)."""
        return self.cluster_bytes // self.l2_entry_bytes

    @property
    def l1_needed(self) -> int:
        """L1 entries that cover the virtual disk; later entries are ignored."""
        span = self.cluster_bytes * self.l2_entries
        return -(-self.virtual_bytes // span)

    @property
    def l1_end(self) -> int:
        """File offset just past the L1 entries that matter."""
        return self.l1_offset + self.l1_needed * L1_ENTRY_BYTES

    @property
    def l1_region_end(self) -> int:
        """End of the clusters the whole L1 table occupies (nothing else may live there)."""
        end = self.l1_offset + self.l1_entries * L1_ENTRY_BYTES
        return -(-end // self.cluster_bytes) * self.cluster_bytes


def parse_header(buf: bytes, limits: ReaderLimits) -> Header | int:
    """Parse the header at the start of ``buf``, or return the total bytes it needs first.

    Raises ImageError / UnsupportedImage for a header we refuse.
    """
    if len(buf) >= len(MAGIC) and buf[: len(MAGIC)] != MAGIC:
        raise ImageError(f"qcow2: bad magic {bytes(buf[:4])!r}, expected {MAGIC!r}")
    if len(buf) < V2_HEADER_BYTES:
        return V2_HEADER_BYTES
    fixed = _FIXED.unpack_from(buf)
    version = fixed[1]
    if version not in (2, 3):
        raise ImageError(f"qcow2: unsupported version {version} (only 2 and 3 exist)")
    if version == 2:
        return _parse_complete(buf, fixed, (0, 0, 0, 4, V2_HEADER_BYTES), limits)
    if len(buf) < V3_MIN_HEADER_BYTES:
        return V3_MIN_HEADER_BYTES
    v3 = _V3.unpack_from(buf, V2_HEADER_BYTES)
    return _parse_complete(buf, fixed, v3, limits)


def _parse_complete(
    buf: bytes, fixed: tuple[int, ...], v3: tuple[int, ...], limits: ReaderLimits
) -> Header | int:
    """Validate the fixed fields, then walk the extensions (which may need more bytes)."""
    (_, version, backing_offset, _, cluster_bits, size, crypt, l1_entries, l1_offset) = fixed[:9]
    incompatible, _, _, refcount_order, header_length = v3
    _check_cluster_bits(cluster_bits)
    cluster_bytes = 1 << cluster_bits
    _check_header_length(version, header_length, cluster_bytes)
    if len(buf) < header_length:
        return int(header_length)
    ext_end = _extensions_end(buf, header_length, min(cluster_bytes, limits.max_header_bytes))
    if isinstance(ext_end, int):
        return ext_end
    _check_features(incompatible, ext_end)
    _check_refused(crypt, backing_offset)
    if refcount_order > MAX_REFCOUNT_ORDER:
        raise ImageError(f"qcow2: refcount_order {refcount_order} exceeds {MAX_REFCOUNT_ORDER}")
    extended = bool(incompatible & INCOMPAT_EXTENDED_L2)
    if extended and cluster_bits < MIN_EXTENDED_L2_CLUSTER_BITS:
        raise ImageError(
            f"qcow2: extended L2 entries need clusters of at least "
            f"{1 << MIN_EXTENDED_L2_CLUSTER_BITS} bytes, not {cluster_bytes}"
        )
    header = Header(
        version=version,
        cluster_bits=cluster_bits,
        virtual_bytes=size,
        l1_entries=l1_entries,
        l1_offset=l1_offset,
        extended_l2=extended,
        compression=_compression_type(buf, incompatible, header_length),
    )
    _check_size_and_l1(header, limits)
    return header


def _check_cluster_bits(cluster_bits: int) -> None:
    if not MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS:
        raise ImageError(
            f"qcow2: cluster_bits {cluster_bits} out of range "
            f"({MIN_CLUSTER_BITS}..{MAX_CLUSTER_BITS}, i.e. 512 bytes to 2 MiB)"
        )


def _check_header_length(version: int, header_length: int, cluster_bytes: int) -> None:
    if version == 3 and header_length < V3_MIN_HEADER_BYTES:
        raise ImageError(
            f"qcow2: header_length {header_length} is shorter than {V3_MIN_HEADER_BYTES}"
        )
    if header_length > cluster_bytes:
        raise ImageError(
            f"qcow2: header_length {header_length} exceeds the cluster size {cluster_bytes}"
        )


class _Extensions:
    """What the header extensions told us (only feature names matter to a reader)."""

    __slots__ = ("feature_names",)

    def __init__(self) -> None:
        self.feature_names: dict[int, str] = {}


def _extensions_end(buf: bytes, start: int, end_limit: int) -> _Extensions | int:
    """Walk the header extensions from ``start``; unknown ones are skipped.

    Returns the extensions, or the total bytes needed to see the next one.
    """
    found = _Extensions()
    at = start
    while at < end_limit:
        if at + EXT_HEADER_BYTES > end_limit:
            raise ImageError(f"qcow2: header extensions run past offset {end_limit}")
        if len(buf) < at + EXT_HEADER_BYTES:
            return at + EXT_HEADER_BYTES
        kind, length = (int(v) for v in _EXT.unpack_from(buf, at))
        if kind == EXT_END:
            return found
        data_at = at + EXT_HEADER_BYTES
        if data_at + length > end_limit:
            raise ImageError(
                f"qcow2: header extension {kind:#010x} of {length} bytes at offset {at} "
                f"runs past offset {end_limit}"
            )
        if len(buf) < data_at + length:
            return data_at + length
        if kind == EXT_FEATURE_NAMES:
            found.feature_names.update(_feature_names(buf[data_at : data_at + length]))
        at = data_at + -(-length // 8) * 8
    return found


def _feature_names(table: bytes) -> dict[int, str]:
    """Names of incompatible feature bits from a feature name table extension."""
    names: dict[int, str] = {}
    for at in range(0, len(table) - FEATURE_NAME_ENTRY_BYTES + 1, FEATURE_NAME_ENTRY_BYTES):
        kind, bit = table[at], table[at + 1]
        if kind == FEATURE_TYPE_INCOMPATIBLE and bit < 64:
            raw = table[at + 2 : at + FEATURE_NAME_ENTRY_BYTES].split(b"\0", 1)[0]
            names[bit] = raw.decode("ascii", "replace")
    return names


def _check_features(incompatible: int, ext: _Extensions) -> None:
    unknown = incompatible & ~INCOMPAT_KNOWN
    if unknown:
        bits = [b for b in range(64) if unknown >> b & 1]
        named = ", ".join(
            f"{b} ({ext.feature_names[b]})" if b in ext.feature_names else str(b) for b in bits
        )
        raise UnsupportedImage(f"qcow2: unknown incompatible feature bits set: {named}")
    if incompatible & INCOMPAT_CORRUPT:
        raise ImageError("qcow2: image is marked corrupt (incompatible feature bit 1)")
    if incompatible & INCOMPAT_DATA_FILE:
        raise UnsupportedImage("qcow2: images with an external data file are not supported")


def _check_refused(crypt: int, backing_offset: int) -> None:
    if crypt != 0:
        name = CRYPT_NAMES.get(crypt, f"unknown method {crypt}")
        raise UnsupportedImage(f"qcow2: encrypted images are not supported ({name})")
    if backing_offset != 0:
        raise UnsupportedImage("qcow2: images with a backing file are not supported")


def _compression_type(buf: bytes, incompatible: int, header_length: int) -> int:
    present = header_length > COMPRESSION_TYPE_AT
    kind = buf[COMPRESSION_TYPE_AT] if present else COMPRESSION_ZLIB
    if not incompatible & INCOMPAT_COMPRESSION:
        if kind != COMPRESSION_ZLIB:
            raise ImageError(
                f"qcow2: compression_type {kind} set without the compression type feature bit"
            )
        return COMPRESSION_ZLIB
    if not present or kind == COMPRESSION_ZLIB:
        raise ImageError("qcow2: compression type feature bit set but compression_type is zlib")
    if kind not in COMPRESSION_NAMES:
        raise UnsupportedImage(f"qcow2: unknown compression type {kind}")
    return kind


def _check_size_and_l1(header: Header, limits: ReaderLimits) -> None:
    if header.virtual_bytes > limits.max_virtual_bytes:
        raise ImageError(
            f"qcow2: virtual size {header.virtual_bytes} bytes exceeds the limit of "
            f"{limits.max_virtual_bytes} bytes (max_virtual_bytes)"
        )
    if header.l1_entries < header.l1_needed:
        raise ImageError(
            f"qcow2: L1 table of {header.l1_entries} entries is too small for a virtual "
            f"size of {header.virtual_bytes} bytes ({header.l1_needed} entries needed)"
        )
    if header.l1_entries * L1_ENTRY_BYTES > limits.max_metadata_bytes:
        raise ImageError(
            f"qcow2: L1 table of {header.l1_entries} entries exceeds the metadata limit of "
            f"{limits.max_metadata_bytes} bytes (max_metadata_bytes)"
        )
    if header.l1_needed == 0:
        return
    if header.l1_offset % header.cluster_bytes:
        raise ImageError(f"qcow2: L1 table offset {header.l1_offset:#x} is not cluster aligned")
    if header.l1_offset < header.cluster_bytes:
        raise ImageError(
            f"qcow2: L1 table offset {header.l1_offset:#x} points inside the header cluster"
        )
