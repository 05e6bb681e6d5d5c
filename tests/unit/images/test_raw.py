"""RawReader and IsoReader: pass-through, zero holes, and the fixed-VHD footer rule."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from fabric.images.base import ImageError, MemorySpill, MiB, ReaderLimits
from fabric.images.raw import IsoReader, RawReader
from tests.imagekit import (
    convert,
    make_mixed_raw,
    needs_qemu,
    qemu_img,
    qemu_raw,
    read_all,
    read_through,
)
from tests.unit.images.test_vhd import fix_footer, footer_bytes

SEEDS = (0, 1, 2)


def qemu_vpc_raw(image: Path, tmp: Path) -> bytes:
    """What qemu reads from a VHD named explicitly (its probe only sees dynamic ones)."""
    out = tmp / (image.name + ".vpc.raw")
    qemu_img("convert", "-f", "vpc", "-O", "raw", image, out)
    return out.read_bytes()


def fixed_footer(size: int) -> bytes:
    return bytes(footer_bytes(size, 2**64 - 1, disk_type=2))


@needs_qemu
@pytest.mark.parametrize("size", [4 * MiB, 3 * MiB + 512, 3 * MiB + 777, 100, 1])
def test_raw_reads_like_qemu(tmp_path: Path, size: int) -> None:
    """A disk that is not whole sectors is padded with zeros to 512, as qemu pads it."""
    data = make_mixed_raw(tmp_path / "disk.img", size, seed=size)
    ref = qemu_raw(tmp_path / "disk.img", tmp_path)
    assert ref[:size] == data and ref[size:].count(0) == len(ref) - size
    for seed in SEEDS:
        assert read_through(RawReader, tmp_path / "disk.img", seed=seed) == ref
        assert read_through(IsoReader, tmp_path / "disk.img", seed=seed) == ref


@pytest.mark.parametrize(("size", "padded"), [(1, 511), (511, 1), (512, 0), (5000, 120), (0, 0)])
def test_padding_to_a_whole_sector_is_counted(size: int, padded: int) -> None:
    reader = RawReader(ReaderLimits(), MemorySpill())
    runs = list(reader.feed(b"x" * size)) + list(reader.finish())
    assert reader.virtual_size == size + padded and reader.padded_bytes == padded
    assert sum(len(r.data) for r in runs) == size  # the zeros are a hole, never sent


def test_a_fixed_vhd_is_not_padded() -> None:
    disk = b"y" * 1024
    reader = RawReader(ReaderLimits(), MemorySpill())
    list(reader.feed(disk + fixed_footer(len(disk))))
    list(reader.finish())
    assert reader.format == "vhd" and reader.padded_bytes == 0 and reader.virtual_size == 1024


def test_size_is_known_at_finish_only() -> None:
    reader = RawReader(ReaderLimits(), MemorySpill())
    list(reader.feed(b"x" * 5000))
    assert reader.virtual_size is None
    list(reader.finish())
    assert reader.virtual_size == 5120 and reader.format == "raw"


def test_empty_file_is_an_empty_disk() -> None:
    reader = RawReader(ReaderLimits(), MemorySpill())
    assert list(reader.finish()) == [] and reader.virtual_size == 0


def test_zero_runs_are_holes_and_runs_stay_modest() -> None:
    blob = bytes(3 * MiB) + b"\x01" * (3 * MiB) + bytes(MiB)
    runs = read_all(RawReader, blob)
    assert all(len(data) <= 1 * MiB for _, data in runs)
    assert [(off, len(data)) for off, data in runs] == [
        (3 * MiB, MiB),
        (4 * MiB, MiB),
        (5 * MiB, MiB),
    ]


def test_tiny_chunks_are_coalesced() -> None:
    reader = RawReader(ReaderLimits(), MemorySpill())
    runs = [run for i in range(3000) for run in reader.feed(b"\x05")]
    runs += list(reader.finish())
    assert [(r.offset, len(r.data)) for r in runs] == [(0, 3000)]


@needs_qemu
@pytest.mark.parametrize(
    ("size", "options"),
    [
        (5 * MiB + 12345, ("subformat=fixed",)),
        (3 * MiB + 512, ("subformat=fixed,force_size=on",)),
        (700 * 1024 + 100, ("subformat=fixed,force_size=on",)),
    ],
)
def test_fixed_vhd_is_recognised_and_its_footer_dropped(
    tmp_path: Path, size: int, options: tuple[str]
) -> None:
    make_mixed_raw(tmp_path / "src.raw", size, seed=5)
    img = convert(tmp_path / "src.raw", tmp_path / "fixed.vhd", "vpc", *options)
    ref = qemu_vpc_raw(img, tmp_path)
    assert len(ref) == img.stat().st_size - 512
    for seed in SEEDS:
        assert read_through(RawReader, img, seed=seed) == ref
    reader = RawReader(ReaderLimits(), MemorySpill())
    list(reader.feed(img.read_bytes()))
    list(reader.finish())
    assert reader.format == "vhd" and reader.virtual_size == len(ref)


@needs_qemu
def test_iso_keeps_a_fixed_vhd_footer(tmp_path: Path) -> None:
    make_mixed_raw(tmp_path / "src.raw", 2 * MiB, seed=6)
    img = convert(tmp_path / "src.raw", tmp_path / "fixed.vhd", "vpc", "subformat=fixed")
    assert read_through(IsoReader, img) == img.read_bytes()


def _disk_then(footer: bytes, disk_bytes: int = 8192) -> bytes:
    return b"\x11" * disk_bytes + footer


def _bad_checksum(footer: bytes) -> bytes:
    broken = bytearray(footer)
    broken[300] ^= 1
    return bytes(broken)


def _with_type(footer: bytes, disk_type: int) -> bytes:
    patched = bytearray(footer)
    struct.pack_into(">I", patched, 60, disk_type)
    fix_footer(patched, 0)
    return bytes(patched)


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(_disk_then(fixed_footer(4096)), id="size-mismatch"),
        pytest.param(_disk_then(_bad_checksum(fixed_footer(8192))), id="bad-checksum"),
        pytest.param(_disk_then(_with_type(fixed_footer(8192), 3)), id="dynamic-type"),
        pytest.param(_disk_then(fixed_footer(8192))[1:], id="footer-not-at-the-end"),
        pytest.param(fixed_footer(0)[:511], id="too-short"),
    ],
)
def test_footer_like_tails_stay_disk_bytes(blob: bytes) -> None:
    reader = RawReader(ReaderLimits(), MemorySpill())
    runs = [*reader.feed(blob), *reader.finish()]
    assert reader.format == "raw" and reader.virtual_size == len(blob) + reader.padded_bytes
    disk = bytearray(reader.virtual_size)
    for run in runs:
        disk[run.offset : run.offset + len(run.data)] = run.data
    assert disk == blob + bytes(reader.padded_bytes)


def test_a_bare_fixed_footer_is_an_empty_vhd() -> None:
    reader = RawReader(ReaderLimits(), MemorySpill())
    runs = [*reader.feed(fixed_footer(0)), *reader.finish()]
    assert runs == [] and reader.format == "vhd" and reader.virtual_size == 0


def test_refuses_a_disk_over_the_limit() -> None:
    reader = RawReader(ReaderLimits(max_virtual_bytes=1 * MiB), MemorySpill())
    with pytest.raises(ImageError, match="exceeds the limit"):
        for _ in range(4):
            list(reader.feed(b"\x01" * MiB))
    reader = RawReader(ReaderLimits(max_virtual_bytes=1 * MiB), MemorySpill())
    list(reader.feed(b"\x01" * (MiB + 100)))
    with pytest.raises(ImageError, match="exceeds the limit"):
        list(reader.finish())
