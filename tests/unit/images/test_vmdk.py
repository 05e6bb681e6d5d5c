"""VmdkReader: real qemu-img images read byte-identically, crafted layouts, and every refusal.

Images come from ``qemu-img`` (monolithicSparse, streamOptimized and their options) and
from the builders below, which write layouts qemu 7 does not: a VMware-style stream with
its tables, footer and end-of-stream marker at the end (``gdOffset = GD_AT_END``), and
sparse extents whose tables follow their grains (the spill path). Where qemu-img is
present the crafted images are also checked against its reading of them.
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import pytest

from fabric.images.base import ImageError, MemorySpill, MiB, ReaderLimits, Run, UnsupportedImage
from fabric.images.vmdk import RUN_MERGE_BYTES, VmdkReader, sniff
from tests.imagekit import convert, make_mixed_raw, needs_qemu, qemu_img, qemu_raw, read_through

SECTOR = 512
GRAIN_SECTORS = 128
DESCRIPTOR_SECTORS = 20
FLAG_NEWLINE = 1
FLAG_STREAM = (1 << 16) | (1 << 17)  # compressed grains with markers
GD_AT_END = 0xFFFF_FFFF_FFFF_FFFF
HEADER_FIELDS = {  # byte offsets of header fields, for patching
    "version": ("<I", 4),
    "flags": ("<I", 8),
    "capacity": ("<Q", 12),
    "grain": ("<Q", 20),
    "desc_offset": ("<Q", 28),
    "desc_size": ("<Q", 36),
    "gtes": ("<I", 44),
    "gd": ("<Q", 56),
    "overhead": ("<Q", 64),
    "newline": ("4s", 73),
    "compression": ("<H", 77),
}


# -- building images --------------------------------------------------------------------


def descriptor_text(create_type: str, capacity: int, extra: str = "", extent: str = "") -> str:
    extent = extent or f'RW {capacity} SPARSE "disk.vmdk"'
    return (
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
        f'createType="{create_type}"\n{extra}\n# Extent description\n{extent}\n\n'
        '# The Disk Data Base\n#DDB\n\nddb.adapterType = "lsilogic"\n'
        'ddb.geometry.sectors = "63"\n'
    )


def header_bytes(
    capacity: int, grain: int, gtes: int, gd: int, overhead: int, stream: bool
) -> bytes:
    raw = struct.pack(
        "<4sIIQQQQIQQQB4sH",
        b"KDMV",
        3 if stream else 1,
        FLAG_NEWLINE | (FLAG_STREAM if stream else 0),
        capacity,
        grain,
        1,
        DESCRIPTOR_SECTORS,
        gtes,
        0,
        gd,
        overhead,
        0,
        b"\n \r\n",
        1 if stream else 0,
    )
    return raw.ljust(SECTOR, b"\0")


def _geometry(data: bytes, grain: int, gtes: int) -> tuple[int, int, int, int, int]:
    capacity = -(-len(data) // SECTOR)
    grains = -(-capacity // grain)
    tables = -(-grains // gtes)
    return capacity, grains, tables, -(-gtes * 4 // SECTOR), -(-tables * 4 // SECTOR)


def _grains_of(data: bytes, grain: int) -> list[tuple[int, bytes]]:
    size = grain * SECTOR
    return [
        (i, data[i * size : (i + 1) * size])
        for i in range(-(-len(data) // size))
        if any(data[i * size : (i + 1) * size])
    ]


def build_sparse(
    data: bytes, layout: str = "front", grain: int = GRAIN_SECTORS, gtes: int = 512
) -> bytes:
    """A monolithicSparse extent of ``data``: tables "front", "gd_first" or "tables_last"."""
    capacity, _, tables, gt_sectors, gd_sectors = _geometry(data, grain, gtes)
    grains = _grains_of(data, grain)
    cursor = 1 + DESCRIPTOR_SECTORS

    def place(sectors: int) -> int:
        nonlocal cursor
        cursor += sectors
        return cursor - sectors

    gd = place(gd_sectors) if layout in ("front", "gd_first") else 0
    gts = [place(gt_sectors) for _ in range(tables)] if layout == "front" else []
    overhead = cursor
    where = {i: place(grain) for i, _ in grains}
    if layout != "front":
        gts = [place(gt_sectors) for _ in range(tables)]
    if layout == "tables_last":
        gd = place(gd_sectors)
    image = bytearray(cursor * SECTOR)
    image[:SECTOR] = header_bytes(capacity, grain, gtes, gd, overhead, stream=False)
    _put_descriptor(image, descriptor_text("monolithicSparse", capacity))
    struct.pack_into(f"<{tables}I", image, gd * SECTOR, *gts)
    for t, gt in enumerate(gts):
        entries = [where.get(t * gtes + j, 0) for j in range(gtes)]
        struct.pack_into(f"<{gtes}I", image, gt * SECTOR, *entries)
    for i, chunk in grains:
        image[where[i] * SECTOR : where[i] * SECTOR + len(chunk)] = chunk
    return bytes(image)


def build_stream(
    data: bytes, grain: int = GRAIN_SECTORS, gtes: int = 512, tables: str = "end"
) -> bytes:
    """A streamOptimized extent ending in an end-of-stream marker.

    ``tables="end"``: VMware's streaming layout -- grains, then GT and GD markers, the
    footer (``gdOffset = GD_AT_END`` in the header). ``tables="front"``: open-vmdk's --
    GD and GTs between the descriptor and the grains, no footer.
    """
    capacity, _, n_tables, gt_sectors, gd_sectors = _geometry(data, grain, gtes)
    markers = [
        (i, _sector_pad(grain_marker(i * grain, zlib.compress(chunk))))
        for i, chunk in _grains_of(data, grain)
    ]
    first = 1 + DESCRIPTOR_SECTORS
    if tables == "front":
        first += gd_sectors + n_tables * gt_sectors
    where, cursor = {}, first
    for i, marker in markers:
        where[i] = cursor
        cursor += len(marker) // SECTOR
    entries = [[where.get(t * gtes + j, 0) for j in range(gtes)] for t in range(n_tables)]
    gd = GD_AT_END if tables == "end" else 1 + DESCRIPTOR_SECTORS
    image = bytearray(header_bytes(capacity, grain, gtes, gd, first, stream=True))
    image += descriptor_text("streamOptimized", capacity).encode().ljust(20 * SECTOR, b"\0")
    if tables == "front":
        gts = [gd + gd_sectors + t * gt_sectors for t in range(n_tables)]
        image += _sector_pad(struct.pack(f"<{n_tables}I", *gts))
        for table in entries:
            image += _sector_pad(struct.pack(f"<{gtes}I", *table))
    for _, marker in markers:
        image += marker
    if tables == "end":
        gt_at: dict[int, int] = {}
        for t, table in enumerate(entries):
            if any(table):
                image += metadata_marker(gt_sectors, 1)
                gt_at[t] = len(image) // SECTOR
                image += _sector_pad(struct.pack(f"<{gtes}I", *table))
        image += metadata_marker(gd_sectors, 2)
        gd_at = len(image) // SECTOR
        gd_entries = [gt_at.get(t, 0) for t in range(n_tables)]
        image += _sector_pad(struct.pack(f"<{n_tables}I", *gd_entries))
        image += metadata_marker(1, 3)
        image += header_bytes(capacity, grain, gtes, gd_at, first, stream=True)
    image += metadata_marker(0, 0)
    return bytes(image)


def grain_marker(lba: int, compressed: bytes) -> bytes:
    return struct.pack("<QI", lba, len(compressed)) + compressed


def metadata_marker(sectors: int, kind: int) -> bytes:
    return struct.pack("<QII", sectors, 0, kind).ljust(SECTOR, b"\0")


def _sector_pad(raw: bytes) -> bytes:
    return raw.ljust(-(-len(raw) // SECTOR) * SECTOR, b"\0")


def _put_descriptor(image: bytearray, text: str) -> None:
    raw = text.encode()
    assert len(raw) <= DESCRIPTOR_SECTORS * SECTOR
    image[SECTOR : SECTOR * (1 + DESCRIPTOR_SECTORS)] = raw.ljust(
        DESCRIPTOR_SECTORS * SECTOR, b"\0"
    )


def patch_header(blob: bytes, **fields: int | bytes) -> bytes:
    image = bytearray(blob)
    for name, value in fields.items():
        fmt, offset = HEADER_FIELDS[name]
        struct.pack_into(fmt, image, offset, value)
    return bytes(image)


def with_descriptor(blob: bytes, text: str) -> bytes:
    image = bytearray(blob)
    _put_descriptor(image, text)
    return bytes(image)


def sample_data(size: int, seed: int = 7) -> bytes:
    """Half random grains, some text, holes, and a partial last grain."""
    rng = random.Random(seed)
    grain = GRAIN_SECTORS * SECTOR
    out = bytearray(size)
    for start in range(0, size, grain):
        kind = rng.choice(("hole", "random", "text", "byte"))
        n = min(grain, size - start)
        if kind == "random":
            out[start : start + n] = rng.randbytes(n)
        elif kind == "text":
            out[start : start + n] = (b"vmdk grain %d " % start * (n // 10 + 1))[:n]
        elif kind == "byte":
            out[start + rng.randrange(n)] = 0xA5
    return bytes(out)


# -- reading ----------------------------------------------------------------------------


def read_blob(blob: bytes, chunk: int = 4096, limits: ReaderLimits | None = None) -> bytes:
    """Feed ``blob`` in fixed chunks; the raw disk, with the run contract checked."""
    reader = VmdkReader(limits or ReaderLimits(), MemorySpill())
    runs: list[Run] = []
    for pos in range(0, len(blob), chunk):
        runs.extend(reader.feed(blob[pos : pos + chunk]))
    runs.extend(reader.finish())
    size = reader.virtual_size
    assert size is not None
    out = bytearray(size)
    end = 0
    for run in sorted(runs, key=lambda r: r.offset):
        assert run.offset >= end and run.offset + len(run.data) <= size
        assert 0 < len(run.data) <= RUN_MERGE_BYTES
        out[run.offset : run.offset + len(run.data)] = run.data
        end = run.offset + len(run.data)
    return bytes(out)


def refused(blob: bytes, error: type[ImageError], fragment: str, **limits: int) -> str:
    """Assert reading ``blob`` (whole, and in odd chunks) raises exactly ``error``."""
    for chunk in (len(blob) or 1, 4093):
        with pytest.raises(ImageError) as info:
            read_blob(blob, chunk, ReaderLimits(**limits))
        assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
        assert fragment in str(info.value), str(info.value)
    return str(info.value)


def _padded(data: bytes) -> bytes:
    return data.ljust(-(-len(data) // SECTOR) * SECTOR, b"\0")


# -- real images from qemu-img ----------------------------------------------------------

QEMU_VARIANTS = {
    "monolithicSparse": (3 * MiB, ()),
    "streamOptimized": (3 * MiB, ("subformat=streamOptimized",)),
    "compat6": (3 * MiB, ("compat6=on",)),
    "compat6-stream-lsilogic": (
        3 * MiB,
        ("subformat=streamOptimized", "compat6=on", "adapter_type=lsilogic"),
    ),
    "adapter-buslogic": (2 * MiB, ("adapter_type=buslogic",)),
    "adapter-legacyESX": (2 * MiB, ("adapter_type=legacyESX",)),
    "zeroed-grain": (3 * MiB, ("zeroed_grain=on",)),
    "partial-grain": (3 * MiB + 5 * SECTOR, ()),
    "partial-grain-stream": (3 * MiB + 5 * SECTOR, ("subformat=streamOptimized",)),
    "partial-sector": (1_000_003, ()),
    "partial-sector-stream": (1_000_003, ("subformat=streamOptimized",)),
}


@needs_qemu
@pytest.mark.parametrize("variant", sorted(QEMU_VARIANTS))
def test_qemu_images_read_byte_identical(tmp_path: Path, variant: str) -> None:
    size, options = QEMU_VARIANTS[variant]
    make_mixed_raw(tmp_path / "disk.raw", size, seed=len(variant))
    image = convert(tmp_path / "disk.raw", tmp_path / "disk.vmdk", "vmdk", *options)
    expected = qemu_raw(image, tmp_path)
    for seed in range(3):
        assert read_through(VmdkReader, image, seed=seed) == expected


@needs_qemu
@pytest.mark.parametrize("options", [(), ("subformat=streamOptimized",)], ids=["sparse", "stream"])
def test_all_zero_disk_emits_nothing(tmp_path: Path, options: tuple[str, ...]) -> None:
    (tmp_path / "zero.raw").write_bytes(bytes(2 * MiB))
    image = convert(tmp_path / "zero.raw", tmp_path / "zero.vmdk", "vmdk", *options)
    reader = VmdkReader(ReaderLimits(), MemorySpill())
    runs = [*reader.feed(image.read_bytes()), *reader.finish()]
    assert runs == []
    assert reader.virtual_size == 2 * MiB == len(qemu_raw(image, tmp_path))


@needs_qemu
@pytest.mark.parametrize("options", [(), ("subformat=streamOptimized",)], ids=["sparse", "stream"])
def test_random_disk(tmp_path: Path, options: tuple[str, ...]) -> None:
    (tmp_path / "random.raw").write_bytes(random.Random(5).randbytes(2 * MiB + 3 * SECTOR))
    image = convert(tmp_path / "random.raw", tmp_path / "random.vmdk", "vmdk", *options)
    assert read_through(VmdkReader, image, seed=9) == qemu_raw(image, tmp_path)


@needs_qemu
def test_stream_emits_before_the_end_and_in_modest_runs(tmp_path: Path) -> None:
    make_mixed_raw(tmp_path / "disk.raw", 4 * MiB, seed=3)
    image = convert(
        tmp_path / "disk.raw", tmp_path / "disk.vmdk", "vmdk", "subformat=streamOptimized"
    ).read_bytes()
    reader = VmdkReader(ReaderLimits(), MemorySpill())
    early = [
        run
        for pos in range(0, len(image) // 2, 8192)
        for run in reader.feed(image[pos : pos + 8192])
    ]
    assert early, "grains of a stream are emitted as they arrive"
    assert all(len(run.data) <= RUN_MERGE_BYTES for run in early)


@needs_qemu
def test_descriptor_is_exposed(tmp_path: Path) -> None:
    make_mixed_raw(tmp_path / "disk.raw", 1 * MiB)
    image = convert(tmp_path / "disk.raw", tmp_path / "d.vmdk", "vmdk", "adapter_type=lsilogic")
    reader = VmdkReader(ReaderLimits(), MemorySpill())
    list(reader.feed(image.read_bytes()))
    list(reader.finish())
    assert reader.descriptor is not None
    assert reader.descriptor.create_type == "monolithicSparse"
    assert reader.descriptor.parent_cid == "ffffffff"
    assert reader.descriptor.ddb["ddb.adapterType"] == "lsilogic"
    assert reader.descriptor.extents[0].filename == "d.vmdk"


def test_sniff() -> None:
    assert sniff(header_bytes(8, 8, 512, 21, 22, stream=False))
    assert not sniff(descriptor_text("monolithicFlat", 8).encode())
    assert not sniff(b"KDM")
    assert not sniff(b"COWD" + bytes(508))


# -- crafted layouts --------------------------------------------------------------------

DATA = sample_data(2 * MiB + 3 * SECTOR)


@pytest.mark.parametrize("layout", ["front", "gd_first", "tables_last"])
@pytest.mark.parametrize("chunk", [1 * MiB, 4096, 509])
def test_sparse_layouts(layout: str, chunk: int) -> None:
    assert read_blob(build_sparse(DATA, layout), chunk) == _padded(DATA)


@pytest.mark.parametrize("grain, gtes", [(8, 512), (2048, 512), (128, 16), (64, 1)])
def test_sparse_geometries(grain: int, gtes: int) -> None:
    blob = build_sparse(DATA, "gd_first", grain=grain, gtes=gtes)
    assert read_blob(blob, 3000) == _padded(DATA)


@pytest.mark.parametrize("tables", ["end", "front"])
@pytest.mark.parametrize("chunk", [len(DATA) * 2, 4096, 13])
def test_stream_layouts(tables: str, chunk: int) -> None:
    assert read_blob(build_stream(DATA, tables=tables), chunk) == _padded(DATA)


@pytest.mark.parametrize("tables", ["end", "front"])
def test_stream_small_grain_tables(tables: str) -> None:
    blob = build_stream(DATA, grain=8, gtes=128, tables=tables)
    assert read_blob(blob, 5000) == _padded(DATA)


@needs_qemu
@pytest.mark.parametrize(
    "blob",
    [
        build_stream(DATA),
        build_stream(DATA, tables="front"),
        build_sparse(DATA, "tables_last"),
        build_sparse(DATA, "gd_first"),
    ],
    ids=["stream-gd-at-end", "stream-tables-front", "sparse-tables-last", "sparse-gd-first"],
)
def test_crafted_layouts_match_qemu(tmp_path: Path, blob: bytes) -> None:
    image = tmp_path / "crafted.vmdk"
    image.write_bytes(blob)
    assert read_through(VmdkReader, image, seed=4) == qemu_raw(image, tmp_path)


def test_tables_after_grains_go_through_the_spill_and_it_is_emptied() -> None:
    spill = MemorySpill()
    reader = VmdkReader(ReaderLimits(), spill)
    blob = build_sparse(DATA, "tables_last")
    gd_start = len(blob) - SECTOR  # the directory is the last sector
    assert list(reader.feed(blob[:gd_start])) == [], "nothing is mapped before the tables"
    assert spill.held_bytes >= 1 * MiB
    runs = [*reader.feed(blob[gd_start:]), *reader.finish()]
    assert spill.held_bytes == 0
    out = bytearray(len(_padded(DATA)))
    for run in runs:
        out[run.offset : run.offset + len(run.data)] = run.data
    assert bytes(out) == _padded(DATA)


def test_spill_limit() -> None:
    refused(
        build_sparse(DATA, "tables_last"), ImageError, "spill limit", max_spill_bytes=256 * 1024
    )


def test_metadata_limit() -> None:
    blob = build_sparse(DATA, "front", grain=8, gtes=512)
    refused(blob, ImageError, "table memory", max_metadata_bytes=1024)


# -- refusals: what the file is ---------------------------------------------------------


@needs_qemu
def test_refuses_monolithic_flat_descriptor(tmp_path: Path) -> None:
    qemu_img("create", "-f", "vmdk", "-o", "subformat=monolithicFlat", tmp_path / "f.vmdk", "1M")
    message = refused((tmp_path / "f.vmdk").read_bytes(), UnsupportedImage, "descriptor-only")
    assert "monolithicFlat" in message and "f-flat.vmdk" in message


@needs_qemu
def test_refuses_two_gb_max_extent_sparse(tmp_path: Path) -> None:
    qemu_img(
        "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", tmp_path / "s.vmdk", "3M"
    )
    refused((tmp_path / "s.vmdk").read_bytes(), UnsupportedImage, "twoGbMaxExtentSparse")
    refused((tmp_path / "s-s001.vmdk").read_bytes(), UnsupportedImage, "multi-file")


@needs_qemu
def test_refuses_differencing_disk(tmp_path: Path) -> None:
    make_mixed_raw(tmp_path / "base.raw", 1 * MiB)
    convert(tmp_path / "base.raw", tmp_path / "base.vmdk", "vmdk")
    qemu_img("create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", tmp_path / "child.vmdk")
    refused((tmp_path / "child.vmdk").read_bytes(), UnsupportedImage, "differencing disk")


def test_refuses_text_descriptor_shorter_than_a_header() -> None:
    text = descriptor_text("vmfs", 2048, extent='RW 2048 VMFS "x-flat.vmdk"').encode()
    message = refused(text[:300], UnsupportedImage, "descriptor-only")
    assert "'vmfs'" in message


SPARSE = build_sparse(DATA)
STREAM = build_stream(DATA)
CAPACITY = -(-len(DATA) // SECTOR)


@pytest.mark.parametrize(
    "create_type", ["twoGbMaxExtentSparse", "monolithicFlat", "vmfs", "vmfsSparse", "seSparse"]
)
def test_refuses_create_types_that_reference_other_files(create_type: str) -> None:
    blob = with_descriptor(SPARSE, descriptor_text(create_type, CAPACITY))
    refused(blob, UnsupportedImage, f"createType '{create_type}'")


@pytest.mark.parametrize(
    "extra, extent, fragment",
    [
        ("", f'RW {CAPACITY} SPARSE "a.vmdk"\nRW 8 SPARSE "b.vmdk"', "2 extents"),
        ("", f'RW {CAPACITY} FLAT "disk-flat.vmdk" 0', "extent type FLAT"),
        ("", f"RW {CAPACITY} ZERO", "extent type ZERO"),
        ("", f'RW {CAPACITY} SPARSE "../other/disk.vmdk"', "another file"),
        ("", f'NOACCESS {CAPACITY} SPARSE "disk.vmdk"', "NOACCESS"),
        ("parentCID=1234abcd", "", "differencing disk (parentCID=1234abcd)"),
        ('parentFileNameHint="base.vmdk"', "", "parent image 'base.vmdk'"),
    ],
)
def test_refuses_descriptor_shapes(extra: str, extent: str, fragment: str) -> None:
    text = descriptor_text("monolithicSparse", CAPACITY, extra=extra, extent=extent)
    if extra.startswith("parentCID"):
        text = text.replace("parentCID=ffffffff\n", "")
    refused(with_descriptor(SPARSE, text), UnsupportedImage, fragment)


@pytest.mark.parametrize(
    "text, fragment",
    [
        (descriptor_text("streamOptimized", CAPACITY), "header describes a monolithicSparse"),
        (descriptor_text("monolithicSparse", CAPACITY + 8), "capacity is"),
        (descriptor_text("monolithicSparse", CAPACITY) + "what is this\n", "malformed"),
        ("version=1\nCID=1\n", "no createType"),
        ('createType="monolithicSparse"\n', "no extent line"),
    ],
)
def test_refuses_inconsistent_descriptors(text: str, fragment: str) -> None:
    refused(with_descriptor(SPARSE, text), ImageError, fragment)


def test_refuses_extent_without_descriptor() -> None:
    refused(
        patch_header(SPARSE, desc_offset=0, desc_size=0), UnsupportedImage, "no embedded descriptor"
    )


# -- refusals: the header -------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, error, fragment",
    [
        ({"version": 0}, ImageError, "version 0"),
        ({"version": 4}, UnsupportedImage, "version 4"),
        (
            {"flags": FLAG_NEWLINE | (1 << 20)},
            UnsupportedImage,
            "incompatible header flags 0x100000",
        ),
        ({"flags": FLAG_NEWLINE | (1 << 17)}, UnsupportedImage, "without compression"),
        ({"compression": 2}, UnsupportedImage, "compression algorithm 2"),
        ({"compression": 1}, ImageError, "disagrees with compression"),
        ({"newline": b"\n \n\n"}, ImageError, "text mode"),
        ({"capacity": 0}, ImageError, "capacity is zero"),
        ({"capacity": (32 << 40) // SECTOR}, ImageError, "exceeds the limit"),
        ({"grain": 100}, ImageError, "not a power of two"),
        ({"grain": 4}, ImageError, "between 8 and 2048"),
        ({"grain": 4096}, ImageError, "between 8 and 2048"),
        ({"gtes": 0}, ImageError, "entries per grain table"),
        ({"gtes": 1024}, ImageError, "entries per grain table"),
        ({"gd": 0}, ImageError, "overlaps the header"),
        ({"gd": 5}, ImageError, "overlaps the descriptor"),
        ({"gd": GD_AT_END}, ImageError, "only a streamOptimized"),
        ({"desc_size": 1 << 20}, ImageError, "exceeds the limit"),
    ],
)
def test_refuses_bad_headers(
    fields: dict[str, int | bytes], error: type[ImageError], fragment: str
) -> None:
    refused(patch_header(SPARSE, **fields), error, fragment)


def test_refuses_bad_magic_and_cowd() -> None:
    refused(b"QFI\xfb" + SPARSE[4:], ImageError, "bad magic")
    refused(b"COWD" + SPARSE[4:], UnsupportedImage, "COWD")


@pytest.mark.parametrize("cut", [0, 100, 511, 600, 21 * SECTOR + 10])
def test_refuses_files_cut_in_the_header_or_tables(cut: int) -> None:
    if cut == 0:
        with pytest.raises(ImageError, match="truncated"):
            list(VmdkReader(ReaderLimits(), MemorySpill()).finish())
        return
    refused(SPARSE[:cut], ImageError, "truncated")


# -- refusals: tables and grains --------------------------------------------------------

SMALL_TABLES = build_sparse(DATA, "front", gtes=16)  # several grain tables
GD_SECTOR = 1 + DESCRIPTOR_SECTORS


def _gd(blob: bytes, count: int) -> list[int]:
    return list(struct.unpack_from(f"<{count}I", blob, GD_SECTOR * SECTOR))


def _set_u32(blob: bytes, offset: int, value: int) -> bytes:
    image = bytearray(blob)
    struct.pack_into("<I", image, offset, value)
    return bytes(image)


def test_refuses_a_grain_table_referenced_twice() -> None:
    first = _gd(SMALL_TABLES, 2)[0]
    blob = _set_u32(SMALL_TABLES, GD_SECTOR * SECTOR + 4, first)
    refused(blob, ImageError, "referenced twice")


def test_refuses_overlapping_grain_tables() -> None:
    blob = build_sparse(DATA, "front", grain=8, gtes=256)  # three two-sector tables
    first = _gd(blob, 2)[0]
    refused(_set_u32(blob, GD_SECTOR * SECTOR + 4, first + 1), ImageError, "overlap")


@pytest.mark.parametrize(
    "target, fragment",
    [(3, "overlaps the descriptor"), (GD_SECTOR, "overlaps the grain directory")],
)
def test_refuses_grain_tables_in_metadata(target: int, fragment: str) -> None:
    refused(_set_u32(SMALL_TABLES, GD_SECTOR * SECTOR, target), ImageError, fragment)


def test_refuses_grain_table_past_the_end() -> None:
    refused(_set_u32(SMALL_TABLES, GD_SECTOR * SECTOR, 10**6), ImageError, "truncated")


def _first_gte_offset(blob: bytes) -> int:
    table = _gd(blob, 1)[0]
    entries = struct.unpack_from("<512I", blob, table * SECTOR)
    j = next(j for j, e in enumerate(entries) if e)
    return table * SECTOR + 4 * j


@pytest.mark.parametrize("target", [0x2, 0x16, 0x17])
def test_refuses_grains_pointing_into_metadata(target: int) -> None:
    refused(
        _set_u32(SPARSE, _first_gte_offset(SPARSE), target),
        ImageError,
        "overlaps the header, descriptor or grain tables",
    )


def test_refuses_grains_referenced_twice() -> None:
    offset = _first_gte_offset(SPARSE)
    entries = struct.unpack_from("<2I", SPARSE, offset)
    second = offset + 4 * (1 if entries[1] else 2)
    refused(_set_u32(SPARSE, second, entries[0]), ImageError, "referenced twice?")


def test_refuses_grain_past_the_end() -> None:
    refused(_set_u32(SPARSE, _first_gte_offset(SPARSE), 10**7), ImageError, "truncated")
    refused(SPARSE[: len(SPARSE) - 70_000], ImageError, "truncated")


def test_zeroed_grain_entries_read_as_zeros() -> None:
    blob = _set_u32(SPARSE, _first_gte_offset(SPARSE), 1)
    got = read_blob(blob)
    first = next(i for i in range(0, len(DATA), GRAIN_SECTORS * SECTOR) if any(DATA[i : i + 65536]))
    assert got[first : first + 65536] == bytes(65536)
    assert got[first + 65536 :] == _padded(DATA)[first + 65536 :]


# -- refusals: the marker stream --------------------------------------------------------

STREAM_GRAIN = 21 * SECTOR  # the first grain marker of build_stream


def _stream_with_first_grain(lba: int, payload: bytes, size: int | None = None) -> bytes:
    """STREAM with its first grain marker replaced (the new one must not be longer)."""
    old_size = struct.unpack_from("<I", STREAM, STREAM_GRAIN + 8)[0]
    old_bytes = len(_sector_pad(grain_marker(0, bytes(old_size))))
    new = struct.pack("<QI", lba, len(payload) if size is None else size) + payload
    assert len(new) <= old_bytes, "the replacement must fit where the old grain was"
    image = bytearray(STREAM)
    image[STREAM_GRAIN : STREAM_GRAIN + old_bytes] = new.ljust(old_bytes, b"\0")
    return bytes(image)


def _first_lba() -> int:
    return int(struct.unpack_from("<Q", STREAM, STREAM_GRAIN)[0])


@pytest.mark.parametrize(
    "lba, payload, size, fragment",
    [
        (None, b"\x78\x9c" + bytes(40), None, "does not inflate"),
        (None, zlib.compress(bytes(100))[:-6], None, "cut short"),
        (None, zlib.compress(bytes(70_000)), None, "more than a grain"),
        (None, zlib.compress(bytes(1000)), None, "inflates to 1000 bytes"),
        (None, zlib.compress(b"x"), 1 << 30, "more than a grain"),
        (3, zlib.compress(bytes(65536)), None, "not a multiple of the grain size"),
        (1 << 40, zlib.compress(bytes(65536)), None, "beyond the capacity"),
        (128 * 1000, zlib.compress(bytes(65536)), None, "beyond the capacity"),
    ],
)
def test_refuses_bad_grain_markers(
    lba: int | None, payload: bytes, size: int | None, fragment: str
) -> None:
    blob = _stream_with_first_grain(_first_lba() if lba is None else lba, payload, size)
    refused(blob, ImageError, fragment)


def test_refuses_grain_markers_the_tables_disagree_with() -> None:
    grain = GRAIN_SECTORS * SECTOR
    grains = range(len(DATA) // grain)
    hole = next(i for i in grains if not any(DATA[i * grain : (i + 1) * grain]))
    other = next(
        i for i in grains if any(DATA[i * grain : (i + 1) * grain]) and i * 128 != _first_lba()
    )
    payload = zlib.compress(bytes(grain))
    moved = _stream_with_first_grain(hole * GRAIN_SECTORS, payload)
    refused(moved, ImageError, "no grain marker was found there")
    doubled = _stream_with_first_grain(other * GRAIN_SECTORS, payload)
    refused(doubled, ImageError, "two grain markers")


def test_refuses_stream_without_end_of_stream_marker() -> None:
    refused(STREAM[:-SECTOR], ImageError, "truncated")
    refused(STREAM[: len(STREAM) // 2], ImageError, "truncated")


def test_refuses_unknown_marker_type() -> None:
    image = bytearray(STREAM)
    struct.pack_into("<I", image, len(image) - SECTOR + 12, 9)
    refused(bytes(image), ImageError, "unknown marker type 9")


def test_refuses_footer_disagreeing_with_the_header() -> None:
    image = bytearray(STREAM)
    struct.pack_into("<Q", image, len(image) - 2 * SECTOR + 12, CAPACITY + 128)
    refused(bytes(image), ImageError, "footer's capacity_sectors")


def test_refuses_stream_grain_table_referenced_twice() -> None:
    blob = build_stream(DATA, gtes=16)
    gd_at = len(blob) - 3 * SECTOR - SECTOR  # GD is one sector before the footer marker
    image = bytearray(blob)
    entries = list(struct.unpack_from("<4I", image, gd_at))
    nonzero = [e for e in entries if e]
    index = entries.index(nonzero[1])
    struct.pack_into("<I", image, gd_at + 4 * index, nonzero[0])
    refused(bytes(image), ImageError, "referenced twice")


def test_refuses_end_of_stream_before_the_footer() -> None:
    image = bytearray(STREAM[:STREAM_GRAIN])
    image += metadata_marker(0, 0)
    refused(bytes(image), ImageError, "before the footer")


@needs_qemu
def test_refuses_qemu_stream_with_a_moved_grain(tmp_path: Path) -> None:
    make_mixed_raw(tmp_path / "disk.raw", 2 * MiB, seed=11)
    image = convert(tmp_path / "disk.raw", tmp_path / "s.vmdk", "vmdk", "subformat=streamOptimized")
    blob = bytearray(image.read_bytes())
    capacity = struct.unpack_from("<Q", blob, 12)[0]
    first = struct.unpack_from("<Q", blob, 64)[0] * SECTOR  # overHead: the first marker
    lba = struct.unpack_from("<Q", blob, first)[0]
    struct.pack_into("<Q", blob, first, (lba + GRAIN_SECTORS) % capacity)
    message = refused(bytes(blob), ImageError, "grain")
    assert "table" in message or "two grain markers" in message
    refused(bytes(image.read_bytes()[: first + 100]), ImageError, "truncated")
