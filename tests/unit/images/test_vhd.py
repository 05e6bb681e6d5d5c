"""VhdReader: dynamic VHDs made by qemu-img or built here, read like qemu reads them.

Real images come from ``qemu-img convert -O vpc``; unusual but legal layouts (other
block sizes, blocks out of order, the BAT or header after the blocks, partial sector
bitmaps) are built with ``struct`` by ``build_vhd``. Each refusal patches a real image.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from fabric.images.base import (
    ImageError,
    KiB,
    MemorySpill,
    MiB,
    ReaderLimits,
    TiB,
    UnsupportedImage,
)
from fabric.images.vhd import VhdReader, parse_footer, sniff
from fabric.images.vhd_format import vhd_checksum
from fabric.images.vhd_keysort import SORT_RUN_KEYS, KeySorter
from fabric.images.vhd_runs import RunBuffer
from fabric.images.vhd_spill import SpillLog
from tests.imagekit import convert, make_mixed_raw, needs_qemu, qemu_raw, read_all, read_through

FOOTER = 512
HEADER_AT = 512  # where qemu puts the dynamic disk header
BAT_AT = 1536  # and the BAT
FOOTER_CHECKSUM_AT = 64
HEADER_CHECKSUM_AT = 36
SEEDS = (0, 1, 2)


# -- building and patching images ------------------------------------------------------


def fix_footer(blob: bytearray, at: int) -> None:
    """Recompute the checksum of the footer at ``at`` (0 or len - 512)."""
    footer = blob[at : at + FOOTER]
    struct.pack_into(">I", blob, at + FOOTER_CHECKSUM_AT, vhd_checksum(footer, FOOTER_CHECKSUM_AT))


def fix_header(blob: bytearray, at: int = HEADER_AT) -> None:
    header = blob[at : at + 1024]
    struct.pack_into(">I", blob, at + HEADER_CHECKSUM_AT, vhd_checksum(header, HEADER_CHECKSUM_AT))


def fix_vhd_checksums(blob: bytearray) -> None:
    """Make both footers and the header checksum-valid again after a patch."""
    fix_footer(blob, 0)
    if len(blob) >= 2 * FOOTER:
        fix_footer(blob, len(blob) - FOOTER)
    if len(blob) >= HEADER_AT + 1024:
        fix_header(blob)


def footer_bytes(size: int, data_offset: int, disk_type: int = 3) -> bytearray:
    """A footer as Hyper-V-like writers make it: sized by ``current_size`` ("qem2")."""
    body = struct.pack(
        ">8sIIQI4sI4sQQHBBII16sB",
        b"conectix", 2, 0x10000, data_offset, 0, b"qem2", 0x50003, b"Wi2k",
        size, size, 65535, 16, 255, disk_type, 0, bytes(range(16)), 0,
    )  # fmt: skip
    footer = bytearray(body.ljust(FOOTER, b"\0"))
    fix_footer(footer, 0)
    return footer


def header_bytes(table_offset: int, entries: int, block_size: int) -> bytearray:
    body = struct.pack(
        ">8sQQIIII", b"cxsparse", 2**64 - 1, table_offset, 0x10000, entries, block_size, 0
    )
    header = bytearray(body.ljust(1024, b"\0"))
    fix_header(header, 0)
    return header


def build_vhd(
    disk: bytes,
    block_size: int,
    *,
    reverse: bool = False,
    bat_at_end: bool = False,
    header_at_end: bool = False,
    bitmap: Callable[[int, int], bytes] | None = None,
) -> bytes:
    """A dynamic VHD of ``disk`` (a multiple of 512 bytes) laid out as asked.

    ``bitmap(index, nbytes)`` gives each block's sector bitmap (default: all set).
    """
    bitmap_bytes = -(-block_size // 512 // 8 // 512) * 512
    n = -(-len(disk) // block_size)
    bat_bytes = -(-n * 4 // 512) * 512
    bat = [0xFFFFFFFF] * n
    used = [i for i in range(n) if disk[i * block_size : (i + 1) * block_size].strip(b"\0")]
    pos = FOOTER + (0 if header_at_end else 1024) + (0 if bat_at_end else bat_bytes)
    blocks = bytearray()
    for i in reversed(used) if reverse else used:
        bat[i] = pos // 512
        data = disk[i * block_size : (i + 1) * block_size].ljust(block_size, b"\0")
        blocks += (bitmap(i, bitmap_bytes) if bitmap else b"\xff" * bitmap_bytes) + data
        pos += bitmap_bytes + block_size
    bat_off = pos if bat_at_end else FOOTER + (0 if header_at_end else 1024)
    header_off = pos + (bat_bytes if bat_at_end else 0) if header_at_end else FOOTER
    footer = footer_bytes(len(disk), header_off)
    bat_blob = struct.pack(f">{n}I", *bat).ljust(bat_bytes, b"\xff")
    header = header_bytes(bat_off, n, block_size)
    parts: list[bytes | bytearray] = [footer]
    parts += [] if header_at_end else [header]
    parts += [] if bat_at_end else [bat_blob]
    parts += [blocks]
    parts += [bat_blob] if bat_at_end else []
    parts += [header] if header_at_end else []
    return b"".join([*parts, footer])


def qemu_vhd(tmp: Path, size: int, *options: str, seed: int = 1) -> Path:
    make_mixed_raw(tmp / "src.raw", size, seed=seed)
    name = "img-" + "-".join(o.replace("=", "_").replace(",", "_") for o in options) + ".vhd"
    return convert(tmp / "src.raw", tmp / name, "vpc", *options)


@pytest.fixture(scope="module")
def vhd_blob(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A qemu-made dynamic VHD of about 5 MiB with three allocated 2 MiB blocks."""
    tmp = tmp_path_factory.mktemp("vhd")
    return qemu_vhd(tmp, 5 * MiB + 12345, "subformat=dynamic").read_bytes()


def written(tmp: Path, blob: bytes, name: str = "built.vhd") -> Path:
    path = tmp / name
    path.write_bytes(blob)
    return path


# -- images qemu made -----------------------------------------------------------------


@needs_qemu
@pytest.mark.parametrize(
    ("size", "options"),
    [
        (5 * MiB + 12345, ("subformat=dynamic",)),
        (4 * MiB, ("subformat=dynamic",)),
        (3 * MiB + 512, ("subformat=dynamic,force_size=on",)),
        (700 * KiB + 100, ("subformat=dynamic,force_size=on",)),
        (512, ("subformat=dynamic",)),
    ],
)
def test_qemu_dynamic_vhd_reads_like_qemu(tmp_path: Path, size: int, options: tuple[str]) -> None:
    img = qemu_vhd(tmp_path, size, *options)
    ref = qemu_raw(img, tmp_path)
    for seed in SEEDS:
        assert read_through(VhdReader, img, seed=seed) == ref


@needs_qemu
def test_chs_sized_disk_is_as_large_as_qemu_says(tmp_path: Path) -> None:
    # 5 MiB + 12345 is not a whole CHS geometry: qemu rounds the disk up, and so do we
    img = qemu_vhd(tmp_path, 5 * MiB + 12345, "subformat=dynamic")
    reader = VhdReader(ReaderLimits(), MemorySpill())
    list(reader.feed(img.read_bytes()[:FOOTER]))
    assert reader.virtual_size == len(qemu_raw(img, tmp_path)) > 5 * MiB + 12345


# -- images built here, still read by qemu as the reference -----------------------------


@needs_qemu
@pytest.mark.parametrize("block_size", [4 * KiB, 512 * KiB, 4 * MiB])
def test_other_block_sizes_read_like_qemu(tmp_path: Path, block_size: int) -> None:
    disk = make_mixed_raw(tmp_path / "src.raw", 3 * MiB + 4608, seed=3)
    img = written(tmp_path, build_vhd(disk, block_size))
    ref = qemu_raw(img, tmp_path)
    assert ref == disk
    for seed in SEEDS:
        assert read_through(VhdReader, img, seed=seed) == ref


@needs_qemu
@pytest.mark.parametrize(
    "layout",
    [
        {"reverse": True},
        {"bat_at_end": True},
        {"header_at_end": True},
        {"header_at_end": True, "reverse": True},
        {"bat_at_end": True, "header_at_end": True},
    ],
)
def test_unusual_layouts_read_like_qemu(tmp_path: Path, layout: dict[str, bool]) -> None:
    """Blocks out of order, or met before the BAT (spilled, then replayed)."""
    disk = make_mixed_raw(tmp_path / "src.raw", 3 * MiB + 1024, seed=4)
    blob = build_vhd(
        disk,
        512 * KiB,
        reverse=layout.get("reverse", False),
        bat_at_end=layout.get("bat_at_end", False),
        header_at_end=layout.get("header_at_end", False),
    )
    img = written(tmp_path, blob)
    ref = qemu_raw(img, tmp_path)
    assert ref == disk
    for seed in SEEDS:
        assert read_through(VhdReader, img, seed=seed) == ref


def test_sectors_with_a_clear_bitmap_bit_read_as_zeros(tmp_path: Path) -> None:
    disk = bytes(range(256)) * (2 * 64 * KiB // 256)  # 128 KiB, no zero sector
    block = 64 * KiB

    def bitmap(index: int, nbytes: int) -> bytes:
        # block 0: only sectors 0 and 9..15 stored; block 1: nothing stored
        return (b"\x80\x7f" + b"\xff" * 14 if index == 0 else bytes(16)).ljust(nbytes, b"\0")

    img = written(tmp_path, build_vhd(disk, block, bitmap=bitmap))
    expected = bytearray(len(disk))
    expected[0:512] = disk[0:512]
    expected[9 * 512 : block] = disk[9 * 512 : block]
    for seed in SEEDS:
        assert read_through(VhdReader, img, seed=seed) == bytes(expected)


def test_spilled_data_is_bounded(tmp_path: Path) -> None:
    disk = bytes([7]) * (2 * MiB)
    img = written(tmp_path, build_vhd(disk, 512 * KiB, bat_at_end=True))
    limits = ReaderLimits(max_spill_bytes=1 * MiB)
    with pytest.raises(ImageError, match="spill limit"):
        read_through(VhdReader, img, limits=limits)
    assert read_through(VhdReader, img, limits=ReaderLimits(max_spill_bytes=3 * MiB)) == disk


def test_runs_are_modest_and_skip_zeros(tmp_path: Path) -> None:
    disk = bytes(1 * MiB) + bytes([1]) * (3 * MiB)
    blob = build_vhd(disk, 2 * MiB)
    runs = read_all(VhdReader, blob)
    assert all(len(data) <= 1 * MiB for _, data in runs)
    assert min(off for off, _ in runs) == 1 * MiB  # the zero first MiB is a hole
    assert sum(len(data) for _, data in runs) == 3 * MiB


@needs_qemu
def test_sniff_and_parse_footer(vhd_blob: bytes) -> None:
    assert sniff(vhd_blob[:512])
    assert not sniff(b"vhdxfile" + bytes(504))
    footer = parse_footer(vhd_blob[-FOOTER:])
    assert footer is not None and footer.disk_type == 3 and footer.creator_app == b"qemu"
    assert parse_footer(vhd_blob[FOOTER : 2 * FOOTER]) is None  # the dynamic header
    assert parse_footer(vhd_blob[:100]) is None
    broken = bytearray(vhd_blob[:FOOTER])
    broken[200] ^= 1
    assert parse_footer(bytes(broken)) is None


# -- refusals ---------------------------------------------------------------------------


def _set(at: int, fmt: str, value: int | bytes) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        struct.pack_into(fmt, blob, at, value)

    return patch


def _bat(index: int, sector: int) -> Callable[[bytearray], None]:
    return _set(BAT_AT + 4 * index, ">I", sector)


def _footer_field(at: int, fmt: str, value: int | bytes) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        struct.pack_into(fmt, blob, at, value)
        fix_footer(blob, 0)

    return patch


def _both_footers(at: int, fmt: str, value: int | bytes) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        for base in (0, len(blob) - FOOTER):
            struct.pack_into(fmt, blob, base + at, value)
            fix_footer(blob, base)

    return patch


def _header_field(at: int, fmt: str, value: int) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        struct.pack_into(fmt, blob, HEADER_AT + at, value)
        fix_header(blob)

    return patch


def _flip(at: int) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        blob[at] ^= 0x01

    return patch


def _then(*patches: Callable[[bytearray], None]) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        for p in patches:
            p(blob)

    return patch


def _tail_footer_size(blob: bytearray) -> None:
    struct.pack_into(">Q", blob, len(blob) - FOOTER + 48, 12345 * 512)
    fix_footer(blob, len(blob) - FOOTER)


REFUSALS: list[tuple[str, Callable[[bytearray], None], type[ImageError], str]] = [
    ("differencing", _footer_field(60, ">I", 4), UnsupportedImage, "differencing disk"),
    ("fixed-at-0", _footer_field(60, ">I", 2), ImageError, "disk type 2"),
    ("unknown-type", _footer_field(60, ">I", 9), ImageError, "disk type 9"),
    ("footer-checksum", _flip(300), ImageError, "bad footer checksum"),
    ("footer-cookie", _set(0, "8s", b"conectiy"), ImageError, "bad footer cookie"),
    ("header-cookie", _set(HEADER_AT, "8s", b"cxsparsf"), ImageError, "header cookie"),
    ("header-checksum", _flip(HEADER_AT + 100), ImageError, "header checksum"),
    ("block-not-pow2", _header_field(32, ">I", 3 * MiB), ImageError, "block size 3145728"),
    ("block-too-big", _header_field(32, ">I", 512 * MiB), ImageError, "block size"),
    ("block-too-small", _header_field(32, ">I", 2048), ImageError, "block size 2048"),
    ("bat-too-short", _header_field(28, ">I", 1), ImageError, "BAT has 1 entries"),
    ("bat-too-long", _header_field(28, ">I", 100_000), ImageError, "BAT has 100000 entries"),
    ("bat-far-away", _header_field(16, ">Q", 1 << 55), ImageError, "plausible"),
    ("header-far-away", _footer_field(16, ">Q", 1 << 55), ImageError, "plausible"),
    ("header-in-footer", _footer_field(16, ">Q", 100), ImageError, "overlaps the footer copy"),
    ("block-in-footer-copy", _bat(0, 0), ImageError, "overlaps the footer copy"),
    ("block-in-header", _bat(0, 1), ImageError, "overlaps the dynamic disk header"),
    ("block-in-bat", _bat(1, 3), ImageError, "overlaps the BAT"),
    ("same-block-twice", _bat(1, 4), ImageError, "overlap in the file"),
    ("block-past-end", _bat(2, 0x00FFFFFF), ImageError, "truncated"),
    ("block-into-footer", _bat(2, 0x2006 + 2), ImageError, "into the footer"),
    (
        "too-big-for-vhd",
        _then(_both_footers(28, "4s", b"qem2"), _both_footers(48, ">Q", 3 * TiB)),
        ImageError,
        "exceeds the VHD maximum",
    ),
    ("tail-mismatch", _tail_footer_size, ImageError, "does not match"),
    (
        "tail-garbage",
        lambda b: b.__setitem__(slice(-FOOTER, -FOOTER + 8), b"garbage!"),
        ImageError,
        "no valid footer",
    ),
    (
        "creator-current-size",
        _then(_both_footers(28, "4s", b"win "), _both_footers(48, ">Q", 40 * MiB)),
        ImageError,
        "BAT has 3 entries",
    ),
]


@needs_qemu
@pytest.mark.parametrize(
    ("patch", "error", "fragment"),
    [pytest.param(p, e, f, id=name) for name, p, e, f in REFUSALS],
)
def test_refuses_malformed(
    vhd_blob: bytes, patch: Callable[[bytearray], None], error: type[ImageError], fragment: str
) -> None:
    blob = bytearray(vhd_blob)
    patch(blob)
    with pytest.raises(error, match=fragment) as caught:
        read_all(VhdReader, bytes(blob))
    assert type(caught.value) is error


@needs_qemu
@pytest.mark.parametrize("keep", [0, 100, 511, 1000, 1600, 3000, 1 * MiB, -FOOTER, -600])
def test_refuses_truncated(vhd_blob: bytes, keep: int) -> None:
    with pytest.raises(ImageError, match="truncated"):
        read_all(VhdReader, vhd_blob[:keep])


@needs_qemu
def test_refuses_disk_over_the_limit(vhd_blob: bytes) -> None:
    with pytest.raises(ImageError, match="exceeds the limit"):
        read_all(VhdReader, vhd_blob, limits=ReaderLimits(max_virtual_bytes=1 * MiB))


@pytest.mark.parametrize(
    ("limit", "fragment"),
    [(2 * KiB, "a BAT of 3072 bytes exceeds"), (8 * KiB, "allocated blocks exceed")],
)
def test_refuses_tables_over_the_metadata_limit(limit: int, fragment: str) -> None:
    blob = build_vhd(bytes([1]) * (3 * MiB), 4 * KiB)  # 768 blocks, all allocated
    with pytest.raises(ImageError, match=fragment):
        read_all(VhdReader, blob, limits=ReaderLimits(max_metadata_bytes=limit))


# -- the shared helpers underneath ------------------------------------------------------


def test_key_sorter_merges_many_runs() -> None:
    rng = random.Random(7)
    keys = [rng.getrandbits(64) for _ in range(3 * SORT_RUN_KEYS + 123)]
    sorter = KeySorter()
    for key in keys:
        sorter.add(key)
    assert len(sorter) == len(keys)
    assert list(sorter.merged()) == sorted(keys)
    assert list(sorter.merged()) == sorted(keys)  # as often as asked


def test_run_buffer_drops_zero_granules_aligned_to_guest_offsets() -> None:
    buf = RunBuffer(max_run_bytes=64 * KiB, granule_bytes=4 * KiB)
    data = bytes(6 * KiB) + b"\x01" + bytes(10 * KiB)
    runs = [*buf.add(2 * KiB, data), *buf.flush()]
    assert [(r.offset, len(r.data)) for r in runs] == [(8 * KiB, 4 * KiB)]
    assert runs[0].data[0] == 1


def test_spill_log_reads_back_up_to_a_gap() -> None:
    spill = MemorySpill()
    log = SpillLog("vhd", spill, limit_bytes=10 * MiB)
    log.append(100, memoryview(b"a" * 50))
    log.append(150, memoryview(b"b" * 50))  # contiguous: one piece
    log.append(300, memoryview(b"c" * 10))
    assert log.read(120, 180) == b"a" * 30 + b"b" * 30
    assert log.read(120, 400) == b"a" * 30 + b"b" * 50  # stops at the gap at 200
    assert spill.keys() == [100, 300]
    assert list(log.drain()) == [(100, b"a" * 50 + b"b" * 50), (300, b"c" * 10)]
    assert spill.held_bytes == 0
    with pytest.raises(ImageError, match="spill limit"):
        log.append(0, memoryview(bytes(10 * MiB + 1)))
