"""VMDK grain directory and grain tables, kept compactly and checked against each other.

A grain directory (GD) entry is the sector of one grain table (GT); GT entry ``j`` of GT
``i`` is the sector of grain ``i * numGTEsPerGT + j`` (0: unallocated, reads as zeros;
1: a zeroed grain, also zeros). Everything here is ``array`` based -- four or eight bytes
an entry, never a Python object per grain -- and charged to a ``MetadataBudget`` so a
hostile header cannot make the reader hold more than ``limits.max_metadata_bytes``.

Packed ``(sector << 32) | index`` u64 values sort by file position, which is the order the
streaming reader meets grain tables and grains in.
"""

from __future__ import annotations

import heapq
import operator
import sys
from array import array
from collections.abc import Iterator, Mapping
from itertools import islice

from fabric.images.base import ImageError, MetadataBudget
from fabric.images.vmdk_header import GTE_BYTES, SECTOR_BYTES, SparseHeader

GTE_ZEROED = 1
"""A grain table entry meaning "this grain reads as zeros" (Virtual Disk Format 5.0)."""
INDEX_BITS = 32
INDEX_MASK = (1 << INDEX_BITS) - 1
MAX_SECTOR = (1 << 32) - 1
PACKED_BYTES = 8
SORT_RUN_ENTRIES = 1 << 16
"""Entries sorted at once as Python ints before an ``array``-to-``array`` merge."""

assert array("I").itemsize == GTE_BYTES and array("Q").itemsize == PACKED_BYTES


def u32_array(raw: bytes | bytearray) -> array[int]:
    """Little-endian u32 entries of ``raw`` (its length a multiple of four)."""
    assert len(raw) % GTE_BYTES == 0
    entries = array("I")
    entries.frombytes(raw)
    if sys.byteorder == "big":
        entries.byteswap()
    return entries


def unpack(packed: int) -> tuple[int, int]:
    """``(sector, index)`` of a packed u64."""
    return packed >> INDEX_BITS, packed & INDEX_MASK


def sort_packed(values: array[int], budget: MetadataBudget, what: str) -> array[int]:
    """``values`` in ascending order, in bounded memory (unchanged when already sorted)."""
    if all(map(operator.le, values, islice(values, 1, None))):
        return values
    transient = 2 * PACKED_BYTES * len(values)
    budget.charge(transient, what)
    try:
        runs = [
            array("Q", sorted(values[start : start + SORT_RUN_ENTRIES]))
            for start in range(0, len(values), SORT_RUN_ENTRIES)
        ]
        return array("Q", heapq.merge(*runs))
    finally:
        budget.release(transient)


def plan_grain_tables(
    gd: array[int],
    header: SparseHeader,
    budget: MetadataBudget,
    forbidden: list[tuple[int, int, str]],
    stream_start_bytes: int | None,
) -> array[int]:
    """Grain tables the directory references, as sorted packed ``(sector, gd_index)``.

    Refuses a table referenced twice, tables that overlap each other or a ``forbidden``
    ``(start, end, name)`` byte range, and (``stream_start_bytes``) tables inside a
    stream-optimized extent's marker stream.
    """
    budget.charge(PACKED_BYTES * sum(1 for sector in gd if sector), "the grain table list")
    queue = array("Q", ((sector << INDEX_BITS) | i for i, sector in enumerate(gd) if sector))
    queue = sort_packed(queue, budget, "sorting the grain table list")
    gt_bytes = header.gt_bytes
    previous: tuple[int, int] | None = None
    for packed in queue:
        sector, index = unpack(packed)
        start = sector * SECTOR_BYTES
        _check_table_place(start, start + gt_bytes, index, forbidden, stream_start_bytes)
        if previous is not None:
            _check_table_pair(previous, (sector, index), gt_bytes)
        previous = (sector, index)
    return queue


def table_entries(raw: bytes | bytearray, gd_index: int, header: SparseHeader) -> array[int]:
    """GT entries normalised: 0 for holes, zeroed grains and entries past the capacity."""
    entries = u32_array(raw)
    valid = header.grain_count - gd_index * header.gtes_per_gt
    if valid < len(entries):
        entries[valid:] = array("I", bytes(GTE_BYTES * (len(entries) - valid)))
    if GTE_ZEROED in entries:
        for j, sector in enumerate(entries):
            if sector == GTE_ZEROED:
                entries[j] = 0
    return entries


def allocated_grains(entries: array[int], gd_index: int, gtes_per_gt: int) -> Iterator[int]:
    """Packed ``(sector, grain_index)`` of every allocated entry of one normalised GT."""
    base = gd_index * gtes_per_gt
    for j, sector in enumerate(entries):
        if sector:
            yield (sector << INDEX_BITS) | (base + j)


class GrainLog:
    """Where each grain marker of a stream was found, laid out like the grain tables."""

    def __init__(self, header: SparseHeader, budget: MetadataBudget) -> None:
        self._header = header
        self._budget = budget
        self.tables: dict[int, array[int]] = {}

    def record(self, grain_index: int, sector: int) -> None:
        if sector > MAX_SECTOR:
            raise ImageError(
                f"vmdk: grain marker at sector {sector} lies beyond what grain tables address"
            )
        gd_index, j = divmod(grain_index, self._header.gtes_per_gt)
        table = self.tables.get(gd_index)
        if table is None:
            self._budget.charge(self._header.gt_bytes, "the grain marker log")
            table = self.tables[gd_index] = array("I", bytes(self._header.gt_bytes))
        if table[j]:
            offset = grain_index * self._header.grain_bytes
            raise ImageError(
                f"vmdk: two grain markers (sectors {table[j]} and {sector}) for guest "
                f"offset {offset}"
            )
        table[j] = sector


def verify_tables(
    expected: Mapping[int, array[int]],
    found: Mapping[int, array[int]],
    header: SparseHeader,
    end_bytes: int,
) -> None:
    """Refuse unless the grain tables list exactly the grain markers found in the stream."""
    zeros = array("I", bytes(header.gt_bytes))
    for gd_index in sorted(expected.keys() | found.keys()):
        want = expected.get(gd_index, zeros)
        got = found.get(gd_index, zeros)
        if want == got:
            continue
        j = next(j for j, (w, g) in enumerate(zip(want, got, strict=True)) if w != g)
        grain_index = gd_index * header.gtes_per_gt + j
        raise _mismatch(grain_index * header.grain_bytes, want[j], got[j], end_bytes)


def _mismatch(offset: int, want: int, got: int, end_bytes: int) -> ImageError:
    if not got:
        where = (
            "past the end of the file: truncated"
            if want * SECTOR_BYTES >= end_bytes
            else "but no grain marker was found there"
        )
        return ImageError(
            f"vmdk: the grain table maps guest offset {offset} to sector {want}, {where}"
        )
    if not want:
        return ImageError(
            f"vmdk: the grain marker at sector {got} (guest offset {offset}) is not listed "
            "in the grain tables"
        )
    return ImageError(
        f"vmdk: the grain for guest offset {offset} is at sector {got}, but the grain "
        f"table says sector {want}"
    )


def _check_table_place(
    start: int,
    end: int,
    gd_index: int,
    forbidden: list[tuple[int, int, str]],
    stream_start_bytes: int | None,
) -> None:
    for low, high, name in forbidden:
        if start < high and low < end:
            raise ImageError(f"vmdk: grain table {gd_index} at byte {start} overlaps the {name}")
    if stream_start_bytes is not None and end > stream_start_bytes:
        raise ImageError(
            f"vmdk: grain table {gd_index} at byte {start} lies inside the grain stream "
            f"(which starts at byte {stream_start_bytes})"
        )


def _check_table_pair(previous: tuple[int, int], current: tuple[int, int], gt_bytes: int) -> None:
    (sector_a, index_a), (sector_b, index_b) = previous, current
    if sector_a == sector_b:
        raise ImageError(
            f"vmdk: the grain table at sector {sector_a} is referenced twice "
            f"(directory entries {index_a} and {index_b})"
        )
    if sector_a * SECTOR_BYTES + gt_bytes > sector_b * SECTOR_BYTES:
        raise ImageError(f"vmdk: grain tables at sectors {sector_a} and {sector_b} overlap")
