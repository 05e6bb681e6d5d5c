"""qcow2 L1/L2 table entries decoded into the host byte ranges a reader has to visit.

An L1 entry names one L2 table (one cluster). An L2 entry maps one guest cluster to a
standard host cluster (possibly only some of its 32 subclusters, with extended L2 entries),
to a compressed byte range, or to nothing (unallocated, or reading as zeros). Zero and
unallocated clusters produce nothing: without a backing file they read as zeros.

The decoded items are small frozen records keyed by their host range ``[host, end)``:

* ``TableRef``  an L2 table still to be read,
* ``DataRun``   guest bytes stored verbatim; consecutive clusters that are contiguous both
                in the guest and in the file are merged into one run, which keeps the
                table of pending mappings compact (a preallocated image is a few runs),
* ``Packed``    one compressed cluster; ``length`` is the sector-granular upper bound of
                its compressed size, so its range may overlap the next one's first sector.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from fabric.images.base import ImageError
from fabric.images.qcow2_header import Header

OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00
"""Bits 9-55 of an L1 entry or standard L2 descriptor: the host offset."""
L2_COMPRESSED = 1 << 62
L2_ZERO = 1 << 0
"""Standard descriptor bit 0 (without extended L2): the cluster reads as zeros."""

SECTOR_BYTES = 512
SUBCLUSTERS = 32
ALL_SUBCLUSTERS = (1 << SUBCLUSTERS) - 1

_L2_ENTRY = struct.Struct(">Q")
_L2_EXTENDED_ENTRY = struct.Struct(">QQ")


@dataclass(frozen=True, slots=True)
class TableRef:
    """The L2 table for L1 entry ``l1_index``, one cluster at ``host``."""

    host: int
    length: int
    l1_index: int

    @property
    def end(self) -> int:
        return self.host + self.length


@dataclass(frozen=True, slots=True)
class DataRun:
    """Guest bytes ``[guest, guest + length)`` stored at ``[host, host + length)``.

    ``mask`` is None when every subcluster is allocated; otherwise the run is one cluster
    and bit i of ``mask`` says subcluster i is stored (the others read as zeros).
    """

    host: int
    length: int
    guest: int
    mask: int | None = None

    @property
    def end(self) -> int:
        return self.host + self.length


@dataclass(frozen=True, slots=True)
class Packed:
    """One compressed guest cluster at ``guest``, its data within ``[host, host + length)``."""

    host: int
    length: int
    guest: int

    @property
    def end(self) -> int:
        return self.host + self.length


Item = TableRef | DataRun | Packed


def table_ref(entry: int, l1_index: int, header: Header) -> TableRef | None:
    """Decode one L1 entry; None if its L2 table is unallocated."""
    host = entry & OFFSET_MASK
    if host == 0:
        return None
    if host % header.cluster_bytes:
        raise ImageError(
            f"qcow2: L2 table offset {host:#x} (L1 entry {l1_index}) is not cluster aligned"
        )
    return TableRef(host, header.cluster_bytes, l1_index)


def decode_l2(table: bytes, ref: TableRef, header: Header) -> Iterator[DataRun | Packed]:
    """The mappings of one L2 table, for the guest clusters inside the virtual disk."""
    cluster = header.cluster_bytes
    first_guest = ref.l1_index * header.l2_entries * cluster
    count = min(header.l2_entries, -(-(header.virtual_bytes - first_guest) // cluster))
    run: DataRun | None = None
    for index in range(count):
        guest = first_guest + index * cluster
        item = _decode_entry(table, index, guest, header)
        if item is None:
            continue
        if run is not None and _continues(run, item):
            run = DataRun(run.host, run.length + item.length, run.guest)
            continue
        if run is not None:
            yield run
        if isinstance(item, DataRun) and item.mask is None:
            run = item
        else:
            run = None
            yield item
    if run is not None:
        yield run


def _continues(run: DataRun, item: DataRun | Packed) -> bool:
    return (
        isinstance(item, DataRun)
        and item.mask is None
        and item.host == run.end
        and item.guest == run.guest + run.length
    )


def _decode_entry(table: bytes, index: int, guest: int, header: Header) -> DataRun | Packed | None:
    if header.extended_l2:
        entry, bitmap = _L2_EXTENDED_ENTRY.unpack_from(table, index * 16)
    else:
        (entry,) = _L2_ENTRY.unpack_from(table, index * 8)
        bitmap = 0 if entry & L2_ZERO else ALL_SUBCLUSTERS
    if entry & L2_COMPRESSED:
        return packed(entry, guest, header.cluster_bits)
    host = entry & OFFSET_MASK
    if host % header.cluster_bytes:
        raise ImageError(
            f"qcow2: data cluster offset {host:#x} for guest offset {guest:#x} "
            f"is not cluster aligned"
        )
    return _standard(host, bitmap, guest, header)


def _standard(host: int, bitmap: int, guest: int, header: Header) -> DataRun | None:
    allocated = bitmap & ALL_SUBCLUSTERS
    zeros = bitmap >> SUBCLUSTERS
    if allocated & zeros:
        raise ImageError(
            f"qcow2: subclusters of guest offset {guest:#x} are both allocated and zero "
            f"(bitmap {bitmap:#018x})"
        )
    if allocated == 0 or (host == 0 and not header.extended_l2):
        return None
    if host == 0:
        raise ImageError(
            f"qcow2: guest offset {guest:#x} has allocated subclusters but no host offset"
        )
    mask = None if allocated == ALL_SUBCLUSTERS else allocated
    return DataRun(host, header.cluster_bytes, guest, mask)


def packed(entry: int, guest: int, cluster_bits: int) -> Packed:
    """Decode a compressed cluster descriptor (bits 0..61 of an L2 entry)."""
    size_bits = cluster_bits - 8
    offset_bits = 62 - size_bits
    host = entry & ((1 << offset_bits) - 1)
    sectors = ((entry >> offset_bits) & ((1 << size_bits) - 1)) + 1
    return Packed(host, sectors * SECTOR_BYTES - host % SECTOR_BYTES, guest)


def mask_spans(mask: int, cluster_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` within a cluster of the subclusters set in ``mask``."""
    sub = cluster_bytes // SUBCLUSTERS
    spans: list[tuple[int, int]] = []
    bit = 0
    while bit < SUBCLUSTERS:
        if not mask >> bit & 1:
            bit += 1
            continue
        first = bit
        while bit < SUBCLUSTERS and mask >> bit & 1:
            bit += 1
        spans.append((first * sub, bit * sub))
    return spans
