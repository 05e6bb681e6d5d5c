"""VhdxReader: dynamic and fixed VHDX images made by qemu-img, read like qemu reads them.

Each refusal patches a real image (and re-seals the CRC-32C of headers and region tables
where the patch is not about the CRC).
"""

from __future__ import annotations

import struct
import uuid
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
from fabric.images.vhdx import VhdxReader, sniff
from fabric.images.vhdx_crc32c import checksum_with_field_zeroed, crc32c
from fabric.images.vhdx_format import (
    BAT_REGION,
    FILE_PARAMETERS,
    LOGICAL_SECTOR_SIZE,
    METADATA_REGION,
    PHYSICAL_SECTOR_SIZE,
    VIRTUAL_DISK_SIZE,
)
from tests.imagekit import (
    convert,
    make_mixed_raw,
    needs_qemu,
    qemu_img,
    qemu_raw,
    read_all,
    read_through,
)

HEADERS = (64 * KiB, 128 * KiB)
REGION_TABLES = (192 * KiB, 256 * KiB)
SEEDS = (0, 1, 2)
OTHER_GUID = uuid.UUID("12345678-1234-4234-8234-123456789abc").bytes_le


# -- patching helpers -------------------------------------------------------------------


def fix_vhdx_crcs(blob: bytearray) -> None:
    """Re-seal both headers (4 KiB) and both region tables (64 KiB) after a patch."""
    for at, size in [(h, 4 * KiB) for h in HEADERS] + [(r, 64 * KiB) for r in REGION_TABLES]:
        if len(blob) >= at + size:
            crc = checksum_with_field_zeroed(bytes(blob[at : at + size]), 4)
            struct.pack_into("<I", blob, at + 4, crc)


def region(blob: bytes | bytearray, guid: bytes) -> tuple[int, int, int]:
    """(entry offset in region table 1, file offset, length) of a region."""
    (count,) = struct.unpack_from("<I", blob, REGION_TABLES[0] + 8)
    for i in range(count):
        at = REGION_TABLES[0] + 16 + 32 * i
        if blob[at : at + 16] == guid:
            offset, length = struct.unpack_from("<QI", blob, at + 16)
            return at - REGION_TABLES[0], offset, length
    raise KeyError(guid)


def metadata_entry(blob: bytes | bytearray, guid: bytes) -> tuple[int, int]:
    """(file offset of the metadata table entry, file offset of the item's data)."""
    _, meta, _ = region(blob, METADATA_REGION)
    (count,) = struct.unpack_from("<H", blob, meta + 10)
    for i in range(count):
        at = meta + 32 + 32 * i
        if blob[at : at + 16] == guid:
            (offset,) = struct.unpack_from("<I", blob, at + 16)
            return at, meta + offset
    raise KeyError(guid)


def bat_entry_at(blob: bytes | bytearray, index: int) -> int:
    return region(blob, BAT_REGION)[1] + 8 * index


def qemu_vhdx(tmp: Path, size: int, *options: str, seed: int = 1) -> Path:
    make_mixed_raw(tmp / "src.raw", size, seed=seed)
    name = "img-" + "-".join(o.replace("=", "_").replace(",", "_") for o in options) + ".vhdx"
    return convert(tmp / "src.raw", tmp / name, "vhdx", *options)


@pytest.fixture(scope="module")
def vhdx_blob(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """qemu's dynamic VHDX, 1 MiB blocks: BAT at 2 MiB, metadata at 3 MiB, data from 8 MiB."""
    tmp = tmp_path_factory.mktemp("vhdx")
    blob = qemu_vhdx(tmp, 5 * MiB + 12345, "subformat=dynamic,block_size=1M").read_bytes()
    assert region(blob, BAT_REGION)[1:] == (2 * MiB, 1 * MiB)
    return blob


# -- images qemu made -------------------------------------------------------------------


@needs_qemu
@pytest.mark.parametrize(
    ("size", "options"),
    [
        (5 * MiB + 12345, ("subformat=dynamic",)),
        (5 * MiB + 12345, ("subformat=fixed",)),
        (6 * MiB + 512, ("subformat=dynamic,block_size=1M",)),
        (6 * MiB + 512, ("subformat=fixed,block_size=1M",)),
        (5 * MiB, ("subformat=dynamic,block_size=2M",)),
        (3 * MiB + 4096, ("subformat=dynamic,block_size=32M",)),
        (3 * MiB + 4096, ("subformat=dynamic,block_size=1M,block_state_zero=off",)),
        (2 * MiB + 7, ("subformat=dynamic,log_size=2M",)),
    ],
)
def test_qemu_vhdx_reads_like_qemu(tmp_path: Path, size: int, options: tuple[str]) -> None:
    img = qemu_vhdx(tmp_path, size, *options)
    ref = qemu_raw(img, tmp_path)
    for seed in SEEDS:
        assert read_through(VhdxReader, img, seed=seed) == ref


@needs_qemu
def test_size_is_known_once_the_metadata_arrived(vhdx_blob: bytes) -> None:
    reader = VhdxReader(ReaderLimits(), MemorySpill())
    list(reader.feed(vhdx_blob[: 3 * MiB]))
    assert reader.virtual_size is None  # the metadata region starts at 3 MiB
    list(reader.feed(vhdx_blob[3 * MiB : 4 * MiB]))
    assert reader.virtual_size == 5 * MiB + 12800


@needs_qemu
def test_4096_byte_logical_sectors(tmp_path: Path) -> None:
    """qemu refuses them; the layout is the same, only the chunk ratio changes."""
    disk = make_mixed_raw(tmp_path / "src.raw", 5 * MiB, seed=9)
    img = convert(tmp_path / "src.raw", tmp_path / "img.vhdx", "vhdx", "block_size=1M")
    blob = bytearray(img.read_bytes())
    for guid in (LOGICAL_SECTOR_SIZE, PHYSICAL_SECTOR_SIZE):
        struct.pack_into("<I", blob, metadata_entry(blob, guid)[1], 4096)
    img.write_bytes(blob)
    for seed in SEEDS:
        assert read_through(VhdxReader, img, seed=seed) == disk


@needs_qemu
def test_blocks_before_the_bat_are_spilled_and_replayed(tmp_path: Path, vhdx_blob: bytes) -> None:
    """Move the BAT behind the data blocks: the blocks wait in the spill area."""
    blob = bytearray(vhdx_blob)
    entry, bat, length = region(blob, BAT_REGION)
    moved = -(-len(blob) // MiB) * MiB
    blob += bytes(moved - len(blob)) + blob[bat : bat + length]
    blob[bat : bat + length] = bytes(length)
    for table in REGION_TABLES:
        struct.pack_into("<Q", blob, table + entry + 16, moved)
    fix_vhdx_crcs(blob)
    img = tmp_path / "moved.vhdx"
    img.write_bytes(blob)
    ref = qemu_raw(img, tmp_path)
    for seed in SEEDS:
        assert read_through(VhdxReader, img, seed=seed) == ref
    with pytest.raises(ImageError, match="spill limit"):
        read_through(VhdxReader, img, limits=ReaderLimits(max_spill_bytes=1 * MiB))


@needs_qemu
def test_sniff(vhdx_blob: bytes) -> None:
    assert sniff(vhdx_blob[:512])
    assert not sniff(b"conectix" + bytes(504))


def test_crc32c_known_answer() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"56789", crc32c(b"1234")) == 0xE3069283


@pytest.mark.parametrize("zeros", [0, 1, 7, 4096, 65541])
def test_crc32c_zero_runs_match_bytewise(zeros: int) -> None:
    """Trailing zeros take the GF(2) shortcut; it must equal feeding them one by one."""
    data = b"vhdx" * 10 + bytes(zeros)
    expected = 0xFFFFFFFF
    for byte in data:
        expected ^= byte
        for _ in range(8):
            expected = (expected >> 1) ^ (0x82F63B78 if expected & 1 else 0)
    assert crc32c(data) == expected ^ 0xFFFFFFFF


# -- patches that must still read -------------------------------------------------------


def _put(at: Callable[[bytearray], int], fmt: str, value: object) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        struct.pack_into(fmt, blob, at(blob), value)

    return patch


def _sealed(*patches: Callable[[bytearray], None]) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        for p in patches:
            p(blob)
        fix_vhdx_crcs(blob)

    return patch


def _broken(*offsets: int) -> Callable[[bytearray], None]:
    """Flip a byte at each offset, leaving the CRCs as they are."""

    def patch(blob: bytearray) -> None:
        for at in offsets:
            blob[at] ^= 1

    return patch


def _chain(*patches: Callable[[bytearray], None]) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        for p in patches:
            p(blob)

    return patch


def _header(index: int, field_at: int, fmt: str, value: object) -> Callable[[bytearray], None]:
    return _put(lambda _: HEADERS[index] + field_at, fmt, value)


def _both_headers(field_at: int, fmt: str, value: object) -> Callable[[bytearray], None]:
    return _sealed(*(_header(i, field_at, fmt, value) for i in (0, 1)))


def _seq(index: int, delta: int) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        (other,) = struct.unpack_from("<Q", blob, HEADERS[1 - index] + 8)
        struct.pack_into("<Q", blob, HEADERS[index] + 8, other + delta)

    return patch


def _regions(guid: bytes, field_at: int, fmt: str, value: object) -> Callable[[bytearray], None]:
    """Patch a region entry's field in both region tables."""

    def patch(blob: bytearray) -> None:
        entry = region(blob, guid)[0]
        for table in REGION_TABLES:
            struct.pack_into(fmt, blob, table + entry + field_at, value)

    return _sealed(patch)


def _add_region(
    guid: bytes, offset: int, length: int, required: int
) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        for table in REGION_TABLES:
            (count,) = struct.unpack_from("<I", blob, table + 8)
            struct.pack_into(
                "<16sQII", blob, table + 16 + 32 * count, guid, offset, length, required
            )
            struct.pack_into("<I", blob, table + 8, count + 1)

    return _sealed(patch)


def _add_item(guid: bytes, offset: int, length: int, flags: int) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        meta = region(blob, METADATA_REGION)[1]
        (count,) = struct.unpack_from("<H", blob, meta + 10)
        struct.pack_into("<16sIII", blob, meta + 32 + 32 * count, guid, offset, length, flags)
        struct.pack_into("<H", blob, meta + 10, count + 1)

    return patch


def _item(guid: bytes, fmt: str, value: object) -> Callable[[bytearray], None]:
    return _put(lambda b: metadata_entry(b, guid)[1], fmt, value)


def _item_entry(guid: bytes, field_at: int, fmt: str, value: object) -> Callable[[bytearray], None]:
    return _put(lambda b: metadata_entry(b, guid)[0] + field_at, fmt, value)


def _bat(index: int, state: int, offset_mb: int) -> Callable[[bytearray], None]:
    return _put(lambda b: bat_entry_at(b, index), "<Q", offset_mb << 20 | state)


def _copy_bat(src: int, dst: int) -> Callable[[bytearray], None]:
    def patch(blob: bytearray) -> None:
        at = bat_entry_at(blob, src)
        struct.pack_into("<8s", blob, bat_entry_at(blob, dst), bytes(blob[at : at + 8]))

    return patch


LOG_GUID = 48
LOG_LENGTH = 68
STILL_READABLE: list[tuple[str, Callable[[bytearray], None]]] = [
    ("older-header-broken", _chain(_sealed(_seq(0, 1)), _broken(HEADERS[1] + 200))),
    ("newer-header-broken", _chain(_sealed(_seq(0, 1)), _broken(HEADERS[0] + 200))),
    ("dirty-log-in-older-header", _sealed(_header(0, LOG_GUID, "16s", OTHER_GUID), _seq(1, 1))),
    ("first-region-table-broken", _broken(REGION_TABLES[0] + 5000)),
    ("unknown-optional-region", _add_region(OTHER_GUID, 4 * MiB, 1 * MiB, 0)),
    ("unknown-optional-item", _add_item(OTHER_GUID, 128 * KiB, 8, 0)),
    (
        "log-guid-without-log",
        _chain(_both_headers(LOG_GUID, "16s", OTHER_GUID), _both_headers(LOG_LENGTH, "<I", 0)),
    ),
]


@needs_qemu
@pytest.mark.parametrize(
    "patch", [p for _, p in STILL_READABLE], ids=[n for n, _ in STILL_READABLE]
)
def test_tolerated_patches_still_read(
    tmp_path: Path, vhdx_blob: bytes, patch: Callable[[bytearray], None]
) -> None:
    original = tmp_path / "original.vhdx"
    original.write_bytes(vhdx_blob)
    blob = bytearray(vhdx_blob)
    patch(blob)
    img = tmp_path / "patched.vhdx"
    img.write_bytes(blob)
    assert read_through(VhdxReader, img) == qemu_raw(original, tmp_path)


# -- refusals ---------------------------------------------------------------------------

FP, VS, LS, PS = FILE_PARAMETERS, VIRTUAL_DISK_SIZE, LOGICAL_SECTOR_SIZE, PHYSICAL_SECTOR_SIZE
REFUSALS: list[tuple[str, Callable[[bytearray], None], type[ImageError], str]] = [
    ("file-identifier", _put(lambda _: 0, "8s", b"vhdxfilf"), ImageError, "file identifier"),
    (
        "both-headers-crc",
        _broken(HEADERS[0] + 300, HEADERS[1] + 300),
        ImageError,
        "no valid header",
    ),
    ("log-replay", _both_headers(LOG_GUID, "16s", OTHER_GUID), UnsupportedImage, "log replay"),
    (
        "newer-header-has-dirty-log",
        _sealed(_header(0, LOG_GUID, "16s", OTHER_GUID), _seq(0, 1)),
        UnsupportedImage,
        "log replay",
    ),
    (
        "same-seq-differ",
        _sealed(_seq(0, 0), _header(0, 72, "<Q", 5 * MiB)),
        ImageError,
        "same sequence number",
    ),
    ("header-version", _both_headers(66, "<H", 2), ImageError, "no valid header"),
    ("log-misaligned", _both_headers(72, "<Q", 1 * MiB + 4096), ImageError, "log offset"),
    ("log-version", _both_headers(64, "<H", 1), ImageError, "bad log description"),
    (
        "both-region-tables-crc",
        _broken(REGION_TABLES[0] + 3000, REGION_TABLES[1] + 3000),
        ImageError,
        "no valid region table",
    ),
    (
        "unknown-required-region",
        _add_region(OTHER_GUID, 4 * MiB, 1 * MiB, 1),
        UnsupportedImage,
        "unknown required region",
    ),
    ("region-overlap", _regions(BAT_REGION, 16, "<Q", 3 * MiB), ImageError, "overlaps"),
    (
        "region-overlaps-log",
        _regions(BAT_REGION, 16, "<Q", 1 * MiB),
        ImageError,
        "overlaps the log",
    ),
    (
        "region-in-header",
        _regions(BAT_REGION, 16, "<Q", 0),
        ImageError,
        "overlaps the header section",
    ),
    ("region-far-away", _regions(BAT_REGION, 16, "<Q", 1 << 60), ImageError, "plausible"),
    ("duplicate-bat-region", _add_region(BAT_REGION, 5 * MiB, 1 * MiB, 1), ImageError, "twice"),
    ("no-metadata-region", _regions(METADATA_REGION, 0, "16s", OTHER_GUID), ImageError, "lacks"),
    ("bat-region-too-small", _regions(BAT_REGION, 24, "<I", 0), ImageError, "too small"),
    (
        "metadata-signature",
        _put(lambda b: region(b, METADATA_REGION)[1], "8s", b"metadatx"),
        ImageError,
        "metadata table signature",
    ),
    (
        "unknown-required-item",
        _add_item(OTHER_GUID, 128 * KiB, 8, 4),
        UnsupportedImage,
        "unknown required metadata item",
    ),
    ("duplicate-item", _add_item(FP, 64 * KiB, 8, 4), ImageError, "appears twice"),
    (
        "missing-item",
        _chain(_item_entry(LS, 24, "<I", 0), _item_entry(LS, 0, "16s", OTHER_GUID)),
        ImageError,
        "logical sector size is missing",
    ),
    (
        "item-outside-region",
        _item_entry(FP, 16, "<I", 1 * MiB),
        ImageError,
        "outside the metadata region",
    ),
    ("item-inside-table", _item_entry(FP, 16, "<I", 32), ImageError, "outside the metadata"),
    ("item-too-short", _item_entry(VS, 20, "<I", 4), ImageError, "too short"),
    (
        "has-parent",
        _put(lambda b: metadata_entry(b, FP)[1] + 4, "<I", 2),
        UnsupportedImage,
        "differencing",
    ),
    ("block-512k", _item(FP, "<I", 512 * KiB), ImageError, "block size 524288"),
    ("block-3m", _item(FP, "<I", 3 * MiB), ImageError, "block size 3145728"),
    ("block-512m", _item(FP, "<I", 512 * MiB), ImageError, "block size"),
    ("logical-1024", _item(LS, "<I", 1024), ImageError, "sector sizes 1024/512"),
    ("physical-0", _item(PS, "<I", 0), ImageError, "sector sizes 512/0"),
    ("size-not-sectors", _item(VS, "<Q", 5 * MiB + 1), ImageError, "not a multiple"),
    ("size-over-64t", _item(VS, "<Q", 128 * TiB), ImageError, "64 TiB"),
    ("size-over-limit", _item(VS, "<Q", 32 * TiB), ImageError, "exceeds the limit"),
    ("partially-present", _bat(0, 7, 8), ImageError, "PARTIALLY_PRESENT"),
    ("reserved-state", _bat(1, 4, 9), ImageError, "reserved BAT state 4"),
    ("block-in-header-section", _bat(0, 6, 0), ImageError, "overlaps the header section"),
    ("block-in-log", _bat(0, 6, 1), ImageError, "overlaps the log"),
    ("block-in-bat", _bat(0, 6, 2), ImageError, "overlaps the BAT region"),
    ("block-in-metadata", _bat(2, 6, 3), ImageError, "overlaps the metadata region"),
    ("same-block-twice", _copy_bat(0, 3), ImageError, "overlap in the file"),
    ("block-past-end", _bat(2, 6, 1000), ImageError, "truncated"),
    ("block-far-away", _bat(2, 6, 1 << 40), ImageError, "plausible"),
]


@needs_qemu
@pytest.mark.parametrize(
    ("patch", "error", "fragment"),
    [pytest.param(p, e, f, id=name) for name, p, e, f in REFUSALS],
)
def test_refuses_malformed(
    vhdx_blob: bytes, patch: Callable[[bytearray], None], error: type[ImageError], fragment: str
) -> None:
    blob = bytearray(vhdx_blob)
    patch(blob)
    with pytest.raises(error, match=fragment) as caught:
        read_all(VhdxReader, bytes(blob))
    assert type(caught.value) is error


@needs_qemu
@pytest.mark.parametrize(
    "keep", [0, 7, 64 * KiB + 100, 200 * KiB, 2 * MiB + 10, 3 * MiB + 65 * KiB, 9 * MiB, -1]
)
def test_refuses_truncated(vhdx_blob: bytes, keep: int) -> None:
    with pytest.raises(ImageError, match="truncated"):
        read_all(VhdxReader, vhdx_blob[:keep])


@needs_qemu
def test_refuses_a_bat_over_the_metadata_limit(tmp_path: Path) -> None:
    """16 GiB in 1 MiB blocks: a BAT of 16387 entries (131096 bytes) in a small file."""
    img = tmp_path / "big.vhdx"
    qemu_img("create", "-f", "vhdx", "-o", "block_size=1M", img, "16G")
    with pytest.raises(ImageError, match="a BAT of 131096 bytes exceeds the metadata limit"):
        read_through(VhdxReader, img, limits=ReaderLimits(max_metadata_bytes=100 * KiB))
    assert read_all(VhdxReader, img.read_bytes()) == []  # nothing allocated: no runs
