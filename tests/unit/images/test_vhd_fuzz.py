"""Fuzz the VHD and VHDX readers: a mutated image parses, or raises ImageError; nothing else.

Mutations hit the structures (footers, headers, region and metadata tables, BATs,
bitmaps) of small real images made by qemu-img; half the time the checksums are
re-sealed afterwards so the mutation reaches the parsers behind them. The file may also
be cut short. Whatever comes out must respect the contract: runs inside the virtual
disk, never overlapping. Memory stays bounded for headers that claim huge disks.
"""

from __future__ import annotations

import itertools
import random
import struct
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.images.base import (
    GiB,
    ImageError,
    ImageReader,
    KiB,
    MemorySpill,
    MiB,
    ReaderLimits,
    TiB,
)
from fabric.images.vhd import VhdReader
from fabric.images.vhdx import VhdxReader
from fabric.images.vhdx_format import BAT_REGION, METADATA_REGION, VIRTUAL_DISK_SIZE
from tests.imagekit import convert, make_mixed_raw, needs_qemu
from tests.unit.images.test_vhd import build_vhd, fix_vhd_checksums
from tests.unit.images.test_vhdx import fix_vhdx_crcs, metadata_entry, region

EXAMPLES = 300
FUZZ_LIMITS = ReaderLimits(
    max_virtual_bytes=4 * TiB, max_spill_bytes=16 * MiB, max_metadata_bytes=1 * MiB
)
INTERESTING = [
    0, 1, 2, 3, 4, 5, 6, 7, 0x7F, 0x80, 0xFF, 0x200, 0x1000, 0x10000, 0x100000, 0x200000,
    2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1,
]  # fmt: skip

Mutation = tuple[int, bytes]


@dataclass(frozen=True)
class Seed:
    """A real image and the byte ranges (start, length) of its structures."""

    blob: bytes
    regions: list[tuple[int, int]]


@pytest.fixture(scope="module")
def vhd_seed(tmp_path_factory: pytest.TempPathFactory) -> Seed:
    tmp = tmp_path_factory.mktemp("vhdfuzz")
    make_mixed_raw(tmp / "src.raw", 3 * MiB + 4096, seed=11)
    blob = convert(tmp / "src.raw", tmp / "img.vhd", "vpc", "subformat=dynamic").read_bytes()
    end = len(blob)
    return Seed(blob, [(0, 512), (512, 1024), (1536, 512), (2048, 512), (end - 512, 512)])


@pytest.fixture(scope="module")
def vhdx_seed(tmp_path_factory: pytest.TempPathFactory) -> Seed:
    tmp = tmp_path_factory.mktemp("vhdxfuzz")
    make_mixed_raw(tmp / "src.raw", 2 * MiB + 4096, seed=12)
    img = convert(tmp / "src.raw", tmp / "img.vhdx", "vhdx", "block_size=1M")
    blob = img.read_bytes()
    bat, meta = region(blob, BAT_REGION)[1], region(blob, METADATA_REGION)[1]
    regions = [
        (0, 64),
        (64 * KiB, 80),
        (128 * KiB, 80),
        (192 * KiB, 16 + 32 * 3),
        (256 * KiB, 16 + 32 * 3),
        (meta, 32 * 7),
        (meta + 64 * KiB, 48),
        (bat, 64),
    ]
    return Seed(blob, regions)


@pytest.fixture(scope="module")
def vhd_layout_seed(tmp_path_factory: pytest.TempPathFactory) -> Seed:
    """Blocks reversed, then the BAT, then the header: the spill and backfill paths."""
    disk = make_mixed_raw(tmp_path_factory.mktemp("vhdlayout") / "src.raw", 2 * MiB, seed=14)
    blob = build_vhd(disk, 256 * KiB, reverse=True, bat_at_end=True, header_at_end=True)
    end = len(blob)
    header, bat = end - 512 - 1024, end - 512 - 1024 - 512
    return Seed(blob, [(0, 512), (512, 600), (bat, 512), (header, 1024), (end - 512, 512)])


@st.composite
def mutation(draw: st.DrawFn, regions: list[tuple[int, int]]) -> Mutation:
    start, length = draw(st.sampled_from(regions))
    at = start + draw(st.integers(0, length - 1))
    if draw(st.booleans()):
        return at, draw(st.binary(min_size=1, max_size=8))
    width = draw(st.sampled_from([1, 2, 4, 8]))
    value = draw(st.sampled_from(INTERESTING)) % (1 << (8 * width))
    return at, value.to_bytes(width, draw(st.sampled_from(["big", "little"])))


@st.composite
def case(draw: st.DrawFn, seed: Seed) -> tuple[bytes, int]:
    blob = bytearray(seed.blob)
    for at, value in draw(st.lists(mutation(seed.regions), max_size=6)):
        blob[at : at + len(value)] = value[: len(blob) - at]
    if draw(st.booleans()):
        reseal = fix_vhd_checksums if blob[:8] == b"conectix" else fix_vhdx_crcs
        reseal(blob)
    if draw(st.booleans()):
        del blob[draw(st.integers(0, len(blob))) :]
    return bytes(blob), draw(st.integers(0, 2**32))


MakeReader = Callable[[ReaderLimits, MemorySpill], ImageReader]


def parses_or_refuses(make: MakeReader, blob: bytes, chunk_seed: int) -> None:
    """Feed ``blob`` in random chunks: ImageError, or runs that keep the contract."""
    rng = random.Random(chunk_seed)
    reader = make(FUZZ_LIMITS, MemorySpill())
    spans: list[tuple[int, int]] = []
    try:
        pos = 0
        while pos < len(blob):
            n = rng.choice((1, 511, 4096, 65536, 1 << 20, rng.randint(1, 3 << 20)))
            spans += [(r.offset, r.offset + len(r.data)) for r in reader.feed(blob[pos : pos + n])]
            pos += n
        spans += [(r.offset, r.offset + len(r.data)) for r in reader.finish()]
    except ImageError:
        return
    size = reader.virtual_size
    assert size is not None
    spans.sort()
    assert all(0 <= a < b <= size for a, b in spans), "a run lies outside the disk"
    assert all(b <= c for (_, b), (c, _) in itertools.pairwise(spans)), "runs overlap"


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@needs_qemu
@FUZZ
@given(data=st.data())
def test_mutated_vhd_parses_or_raises_image_error(vhd_seed: Seed, data: st.DataObject) -> None:
    blob, chunk_seed = data.draw(case(vhd_seed))
    parses_or_refuses(VhdReader, blob, chunk_seed)


@FUZZ
@given(data=st.data())
def test_mutated_vhd_layout_parses_or_raises_image_error(
    vhd_layout_seed: Seed, data: st.DataObject
) -> None:
    blob, chunk_seed = data.draw(case(vhd_layout_seed))
    parses_or_refuses(VhdReader, blob, chunk_seed)


@needs_qemu
@FUZZ
@given(data=st.data())
def test_mutated_vhdx_parses_or_raises_image_error(vhdx_seed: Seed, data: st.DataObject) -> None:
    blob, chunk_seed = data.draw(case(vhdx_seed))
    parses_or_refuses(VhdxReader, blob, chunk_seed)


# -- memory stays bounded -----------------------------------------------------------------


def peak_bytes_while_reading(make: MakeReader, blob: bytes) -> int:
    """Peak traced memory while feeding ``blob`` in 64 KiB chunks; must end in ImageError."""
    tracemalloc.start()
    try:
        reader = make(ReaderLimits(), MemorySpill())
        with pytest.raises(ImageError, match="truncated"):
            for at in range(0, len(blob), 64 * KiB):
                for _ in reader.feed(blob[at : at + 64 * KiB]):
                    pass
            for _ in reader.finish():
                pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_vhd_claiming_2040_gib_with_a_full_bat_stays_small() -> None:
    """A full 64 Ki-entry BAT pointing past the end: the BAT, its keys and one sort run."""
    blob = bytearray(build_vhd(bytes(4096), 32 * MiB))
    entries = 2040 * GiB // (32 * MiB)
    struct.pack_into(">Q", blob, 48, 2040 * GiB)  # current size of the footer copy
    struct.pack_into(">I", blob, 512 + 28, entries)  # max table entries
    first = (1536 + 4 * entries) // 512 + 1  # the first sector after the BAT
    step = (32 * MiB + 8192) // 512  # bitmap + block
    bat = struct.pack(f">{entries}I", *range(first, first + entries * step, step))
    blob = blob[:1536] + bytearray(bat)
    fix_vhd_checksums(blob)
    assert peak_bytes_while_reading(VhdReader, bytes(blob)) < 8 * MiB


def test_vhd_claiming_a_huge_bat_in_a_small_file_stays_small() -> None:
    blob = bytearray(build_vhd(bytes(4096), 2 * MiB))
    struct.pack_into(">Q", blob, 48, 2040 * GiB)
    struct.pack_into(">I", blob, 512 + 28, 2040 * GiB // (2 * MiB))
    fix_vhd_checksums(blob)
    assert peak_bytes_while_reading(VhdReader, bytes(blob[: 64 * KiB])) < 2 * MiB


@needs_qemu
def test_vhdx_claiming_16_tib_in_a_small_file_stays_small(tmp_path: Path) -> None:
    make_mixed_raw(tmp_path / "src.raw", 1 * MiB, seed=13)
    blob = bytearray(convert(tmp_path / "src.raw", tmp_path / "i.vhdx", "vhdx").read_bytes())
    struct.pack_into("<Q", blob, metadata_entry(blob, VIRTUAL_DISK_SIZE)[1], 16 * TiB)
    entry = region(blob, BAT_REGION)[0]
    for table in (192 * KiB, 256 * KiB):  # a 129 MiB BAT region past the end of the file
        struct.pack_into("<QI", blob, table + entry + 16, 64 * MiB, 129 * MiB)
    fix_vhdx_crcs(blob)
    end_of_metadata = region(blob, METADATA_REGION)[1] + 1 * MiB
    # what stays is the old BAT location (1 MiB, unclaimed now, so spilled) and the tables
    assert peak_bytes_while_reading(VhdxReader, bytes(blob[:end_of_metadata])) < 4 * MiB
