"""Fuzzing VmdkReader: mutated and truncated images parse or raise ImageError, nothing else.

Small images -- from qemu-img when it is installed, and from the builders in test_vmdk
(a VMware-style stream with its tables at the end, a sparse extent with its tables after
its grains) -- get bytes overwritten where it hurts most (header, descriptor, tables,
markers, footer) or anywhere, and may be cut short. Whatever happens, the runs stay inside
the virtual size and never overlap, or the reader raises ImageError. A second group checks
with tracemalloc that hostile headers claiming huge disks or directories stay in bounds.
"""

from __future__ import annotations

import functools
import itertools
import shutil
import struct
import subprocess
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.images.base import ImageError, MemorySpill, MiB, ReaderLimits, TiB
from fabric.images.vmdk import VmdkReader
from tests.imagekit import make_mixed_raw
from tests.unit.images.test_vmdk import (
    DESCRIPTOR_SECTORS,
    SECTOR,
    build_sparse,
    build_stream,
    descriptor_text,
    header_bytes,
    sample_data,
)

FUZZ_LIMITS = ReaderLimits(
    max_virtual_bytes=64 * MiB,
    max_spill_bytes=4 * MiB,
    max_metadata_bytes=4 * MiB,
    max_header_bytes=64 * 1024,
)
"""Tight limits so that a mutated size field is refused fast rather than read for long."""


@functools.cache
def corpus() -> dict[str, bytes]:
    """Small seed images: crafted always, qemu-made when qemu-img is installed."""
    data = sample_data(300 * 1024, seed=3)
    images = {
        "crafted-stream": build_stream(data),
        "crafted-stream-small-tables": build_stream(data, grain=8, gtes=64),
        "crafted-sparse-tables-last": build_sparse(data, "tables_last"),
        "crafted-sparse-small-tables": build_sparse(data, "front", grain=8, gtes=32),
    }
    if shutil.which("qemu-img"):
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "disk.raw"
            make_mixed_raw(raw, 300 * 1024, seed=5)
            for name, options in (
                ("qemu-sparse", []),
                ("qemu-stream", ["-o", "subformat=streamOptimized"]),
            ):
                out = Path(tmp) / f"{name}.vmdk"
                subprocess.run(
                    ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", *options, raw, out],
                    check=True,
                    capture_output=True,
                )
                images[name] = out.read_bytes()
    return images


def hot_spots(blob: bytes) -> list[tuple[int, int]]:
    """Byte ranges worth mutating: header, descriptor, tables, first markers, the tail."""
    overhead = struct.unpack_from("<Q", blob, 64)[0] * SECTOR
    overhead = min(overhead, len(blob))
    return [
        (0, SECTOR),
        (SECTOR, min(SECTOR * (1 + DESCRIPTOR_SECTORS), len(blob))),
        (SECTOR * (1 + DESCRIPTOR_SECTORS), max(overhead, SECTOR * 22)),
        (overhead, min(overhead + 4 * SECTOR, len(blob))),
        (max(len(blob) - 3 * SECTOR, 0), len(blob)),
        (0, len(blob)),
    ]


@st.composite
def mutated_images(draw: st.DrawFn) -> tuple[bytes, int]:
    images = corpus()
    blob = bytearray(images[draw(st.sampled_from(sorted(images)))])
    for _ in range(draw(st.integers(0, 6))):
        low, high = draw(st.sampled_from(hot_spots(bytes(blob))))
        if high <= low:
            continue
        at = draw(st.integers(low, high - 1))
        patch = draw(
            st.one_of(
                st.binary(min_size=1, max_size=8),
                st.sampled_from([b"\x00", b"\xff" * 4, b"\x01\x00\x00\x00", b"\x00" * 8]),
                st.integers(0, 2**64 - 1).map(lambda v: struct.pack("<Q", v)),
            )
        )
        blob[at : at + len(patch)] = patch[: len(blob) - at]
    if draw(st.booleans()):
        del blob[draw(st.integers(0, len(blob))) :]
    chunk = draw(st.sampled_from([1 << 20, 4096, 777, 13]))
    return bytes(blob), chunk


def read_checked(blob: bytes, chunk: int, limits: ReaderLimits) -> None:
    """Read ``blob``; ImageError is fine, otherwise the runs must obey the contract."""
    reader = VmdkReader(limits, MemorySpill())
    spans: list[tuple[int, int]] = []
    try:
        for pos in range(0, len(blob), chunk):
            spans.extend(
                (r.offset, r.offset + len(r.data)) for r in reader.feed(blob[pos : pos + chunk])
            )
        spans.extend((r.offset, r.offset + len(r.data)) for r in reader.finish())
    except ImageError:
        return
    size = reader.virtual_size
    assert size is not None and size <= limits.max_virtual_bytes
    spans.sort()
    for start, end in spans:
        assert 0 <= start < end <= size, f"run [{start}, {end}) outside {size}"
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "runs overlap"


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_images())
def test_mutated_images_parse_or_raise_image_error(case: tuple[bytes, int]) -> None:
    blob, chunk = case
    read_checked(blob, chunk, FUZZ_LIMITS)


@pytest.mark.parametrize("name", ["crafted-stream", "crafted-sparse-tables-last"])
def test_every_truncation_point_of_the_tables_is_refused_cleanly(name: str) -> None:
    blob = corpus()[name]
    for cut in range(len(blob) - 6 * SECTOR, len(blob), 97):
        read_checked(blob[:cut], 4096, FUZZ_LIMITS)


# -- memory stays bounded ---------------------------------------------------------------


def _peak_while_reading(blob_parts: list[bytes], limits: ReaderLimits) -> tuple[int, str]:
    tracemalloc.start()
    try:
        reader = VmdkReader(limits, MemorySpill())
        try:
            for part in blob_parts:
                list(reader.feed(part))
            list(reader.finish())
            message = ""
        except ImageError as exc:
            message = str(exc)
        return tracemalloc.get_traced_memory()[1], message
    finally:
        tracemalloc.stop()


def _hostile_header(capacity_sectors: int, grain: int, gtes: int) -> bytes:
    head = bytearray(header_bytes(capacity_sectors, grain, gtes, 21, 1 << 40, stream=False))
    text = descriptor_text("monolithicSparse", capacity_sectors).encode()
    return bytes(head) + text.ljust(DESCRIPTOR_SECTORS * SECTOR, b"\0")


def test_huge_directory_is_refused_before_allocating() -> None:
    # 16 TiB of 4 KiB grains with one entry a table: a 16 GiB grain directory
    head = _hostile_header((16 * TiB) // SECTOR, 8, 1)
    peak, message = _peak_while_reading([head, bytes(1 * MiB)], ReaderLimits())
    assert "table memory" in message
    assert peak < 2 * MiB


def test_huge_capacity_header_with_junk_stays_small() -> None:
    # 16 TiB of 4 KiB grains: a 32 MiB directory, allowed, but only 2 MiB of it arrives
    head = _hostile_header((16 * TiB) // SECTOR, 8, 512)
    peak, message = _peak_while_reading([head, *[b"\xff" * 65536] * 32], ReaderLimits())
    assert "truncated" in message
    assert peak < 8 * MiB


@pytest.mark.parametrize("limit_mib", [4, 12])
def test_hostile_directory_of_unsorted_tables_respects_the_budget(limit_mib: int) -> None:
    # 256 Ki directory entries naming distinct tables, in descending order: the sort path
    entries = 1 << 18
    capacity = entries * 512 * 8  # sectors: 4 KiB grains, 512 entries a table
    head = _hostile_header(capacity, 8, 512)
    directory = struct.pack(f"<{entries}I", *range(4 * entries + 100, 100, -4))
    limits = ReaderLimits(max_metadata_bytes=limit_mib * MiB)
    peak, message = _peak_while_reading([head, directory], limits)
    assert ("table memory" in message) == (limit_mib == 4), message
    assert peak < 2 * limit_mib * MiB
