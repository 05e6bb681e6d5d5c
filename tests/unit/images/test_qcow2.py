"""Qcow2Reader against real qemu-img images, and against every refusal we promise.

Each good image is read in random chunk sizes and must be byte-identical to what
``qemu-img convert -O raw`` makes of it. Bad images are real ones with a few bytes
patched (or a prefix cut off); each must be refused with the error type and a message
that names the problem.
"""

from __future__ import annotations

import itertools
import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from fabric.images.base import (
    ImageError,
    MemorySpill,
    ReaderLimits,
    UnsupportedImage,
)
from fabric.images.qcow2 import Qcow2Reader, sniff
from fabric.images.qcow2_runs import RUN_MAX_BYTES
from tests.imagekit import convert, make_mixed_raw, needs_qemu, qemu_img, qemu_raw, read_through

MiB = 1024 * 1024
RAW_BYTES = 3 * MiB + 12345  # qemu rounds this up to 512 bytes: not a multiple of any cluster

needs_qemu_io = pytest.mark.skipif(
    shutil.which("qemu-io") is None, reason="qemu-io (qemu-utils) not installed"
)

pytestmark = [needs_qemu, pytest.mark.qemu]


# -- helpers ------------------------------------------------------------------------------


def make_qcow2(tmp: Path, *options: str, name: str = "img", size: int = RAW_BYTES) -> Path:
    """A qcow2 image of a mixed raw disk (holes, text, random, near-empty blocks)."""
    raw = tmp / f"{name}.raw"
    make_mixed_raw(raw, size)
    return convert(raw, tmp / f"{name}.qcow2", "qcow2", *options)


def qemu_io(image: Path, *commands: str) -> None:
    args = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        args += ["-c", command]
    subprocess.run([*args, str(image)], check=True, capture_output=True)


def assert_reads_like_qemu(image: Path, tmp: Path, seeds: int = 3, **limits: int) -> None:
    ref = qemu_raw(image, tmp)
    for seed in range(seeds):
        got = read_through(Qcow2Reader, image, seed=seed, limits=ReaderLimits(**limits))
        assert got == ref, f"{image.name} differs from qemu-img convert (chunk seed {seed})"


def read_blob(blob: bytes, limits: ReaderLimits | None = None) -> list[tuple[int, bytes]]:
    """Feed a whole blob in 4 KiB chunks; return the runs (or raise)."""
    reader = Qcow2Reader(limits or ReaderLimits(), MemorySpill())
    runs = []
    for at in range(0, len(blob), 4096):
        runs += [(r.offset, r.data) for r in reader.feed(blob[at : at + 4096])]
    runs += [(r.offset, r.data) for r in reader.finish()]
    return runs


def header(blob: bytes) -> dict[str, int]:
    """The header fields the tests patch, read independently of the reader."""
    fields = struct.unpack_from(">4sIQIIQIIQ", blob)
    cluster_bits, l1_entries, l1_offset = fields[4], fields[7], fields[8]
    return {"cluster": 1 << cluster_bits, "l1_entries": l1_entries, "l1_offset": l1_offset}


def l1_entry(blob: bytes, index: int) -> int:
    return int(struct.unpack_from(">Q", blob, header(blob)["l1_offset"] + 8 * index)[0])


def first_l2(blob: bytes) -> int:
    """File offset of the first L2 table."""
    return l1_entry(blob, 0) & 0x00FF_FFFF_FFFF_FE00


def patched(blob: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(blob)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def first_l2_entry_index(blob: bytes, entry_bytes: int = 8, compressed: bool = False) -> int:
    """Index of the first allocated (or compressed) entry of the first L2 table."""
    table = first_l2(blob)
    for index in range(header(blob)["cluster"] // entry_bytes):
        (entry,) = struct.unpack_from(">Q", blob, table + index * entry_bytes)
        if entry and bool(entry >> 62 & 1) == compressed:
            return index
    raise AssertionError("no such entry")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A v3 image with 4 KiB clusters (several L1 entries, many L2 entries)."""
    tmp = tmp_path_factory.mktemp("plain")
    return make_qcow2(tmp, "cluster_size=4k", size=2 * MiB + 4321).read_bytes()


@pytest.fixture(scope="module")
def small_clusters(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """512-byte clusters: one L2 table covers 32 KiB, so L1 has many entries."""
    tmp = tmp_path_factory.mktemp("small")
    return make_qcow2(tmp, "cluster_size=512", size=MiB).read_bytes()


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """zlib, 4 KiB clusters of 16 random letters: each compresses to a few sectors."""
    tmp = tmp_path_factory.mktemp("compressed")
    letters = bytes.maketrans(bytes(range(256)), b"abcdefghijklmnop" * 16)
    (tmp / "letters.raw").write_bytes(random.Random(7).randbytes(MiB).translate(letters))
    image = convert(tmp / "letters.raw", tmp / "letters.qcow2", "qcow2", "-c", "cluster_size=4k")
    return image.read_bytes()


# -- good images: byte-identical to qemu-img convert -------------------------------------

VARIANTS = {
    "v2 (compat=0.10)": ("compat=0.10",),
    "v3 (compat=1.1)": ("compat=1.1",),
    "512 B clusters": ("cluster_size=512",),
    "4 KiB clusters": ("cluster_size=4k",),
    "64 KiB clusters": ("cluster_size=64k",),
    "2 MiB clusters": ("cluster_size=2M",),
    "zlib compressed": ("-c",),
    "zlib compressed, 512 B clusters": ("-c", "cluster_size=512"),
    "zlib compressed, v2": ("-c", "compat=0.10"),
    "zstd compressed": ("-c", "compression_type=zstd"),
    "zstd compressed, 2 MiB clusters": ("-c", "compression_type=zstd", "cluster_size=2M"),
    "extended L2, 64 KiB clusters": ("extended_l2=on", "cluster_size=64k"),
    "extended L2, 16 KiB clusters": ("extended_l2=on", "cluster_size=16k"),
    "extended L2, zstd compressed": ("extended_l2=on", "-c", "compression_type=zstd"),
    "preallocation=metadata": ("preallocation=metadata",),
    "preallocation=metadata, v2": ("preallocation=metadata", "compat=0.10"),
    "preallocation=metadata, extended L2": ("preallocation=metadata", "extended_l2=on"),
}


@pytest.mark.parametrize("options", VARIANTS.values(), ids=VARIANTS.keys())
def test_converted_image_reads_like_qemu(tmp_path: Path, options: tuple[str, ...]) -> None:
    image = make_qcow2(tmp_path, *options)
    assert_reads_like_qemu(image, tmp_path)


def test_virtual_size_is_not_a_multiple_of_the_cluster_size(tmp_path: Path) -> None:
    image = make_qcow2(tmp_path, "cluster_size=64k", size=MiB + 3 * 512)
    reader = Qcow2Reader(ReaderLimits(), MemorySpill())
    list(reader.feed(image.read_bytes()[:4096]))
    assert reader.virtual_size == MiB + 3 * 512
    assert_reads_like_qemu(image, tmp_path)


def test_odd_virtual_size_truncates_the_last_cluster(tmp_path: Path) -> None:
    """A header size that isn't even a sector multiple: qemu floors it, we keep it exact."""
    image = make_qcow2(tmp_path, "cluster_size=4k", size=MiB)
    full = qemu_raw(image, tmp_path)
    odd = MiB - 4096 - 333
    image.write_bytes(patched(image.read_bytes(), 24, ">Q", odd))
    got = read_through(Qcow2Reader, image)
    assert got == full[:odd]
    assert qemu_raw(image, tmp_path) == full[: odd // 512 * 512]


@needs_qemu_io
def test_subclusters_partly_allocated_and_zero(tmp_path: Path) -> None:
    for cluster, size in (("64k", "4M"), ("2M", "5M")):
        image = tmp_path / f"sub{cluster}.qcow2"
        qemu_img(
            "create", "-f", "qcow2", "-o", f"extended_l2=on,cluster_size={cluster}", image, size
        )
        qemu_io(
            image,
            "write -P 0x11 4k 2k",
            "write -P 0x22 64k 64k",
            "write -P 0x23 2100k 1k",
            "write -z 72k 8k",
            "write -z 2200k 64k",
            "write -P 0x33 3000k 10k",
            "write -P 0x44 4090k 6k",
        )
        assert_reads_like_qemu(image, tmp_path)


@needs_qemu_io
def test_internal_snapshot_is_ignored(tmp_path: Path) -> None:
    """After a snapshot, new writes COW L2 tables to the end: old data comes before them."""
    image = tmp_path / "snap.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", "cluster_size=4k", image, "4M")
    qemu_io(image, "write -P 0x11 0 300k", "write -P 0x12 1M 64k")
    qemu_img("snapshot", "-c", "before", image)
    qemu_io(image, "write -P 0x21 128k 64k", "write -P 0x22 2M 10k", "write -z 0 64k")
    assert "before" in qemu_img("snapshot", "-l", image)
    assert_reads_like_qemu(image, tmp_path)


@needs_qemu_io
def test_zero_clusters_in_v2_and_v3(tmp_path: Path) -> None:
    for compat in ("0.10", "1.1"):
        image = tmp_path / f"zero{compat}.qcow2"
        qemu_img("create", "-f", "qcow2", "-o", f"compat={compat},cluster_size=4k", image, "2M")
        qemu_io(image, "write -P 0x11 0 300k", "write -z 64k 64k", "discard 200k 8k")
        assert_reads_like_qemu(image, tmp_path)


@needs_qemu_io
def test_l1_table_after_the_data_is_read_from_the_spill_area(tmp_path: Path) -> None:
    """Growing an image relocates its L1 table to the end of the file."""
    image = tmp_path / "grown.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", "cluster_size=512", image, "1M")
    qemu_io(image, "write -P 0x55 0 100k", "write -P 0x66 600k 3k")
    qemu_img("resize", image, "8M")
    qemu_io(image, "write -P 0x77 5M 20k")
    blob = image.read_bytes()
    assert header(blob)["l1_offset"] > len(blob) // 2, "qemu no longer relocates L1"
    assert_reads_like_qemu(image, tmp_path)

    spill = MemorySpill()
    reader = Qcow2Reader(ReaderLimits(), spill)
    held = 0
    for at in range(0, len(blob), 512):
        list(reader.feed(blob[at : at + 512]))
        held = max(held, spill.held_bytes)
    list(reader.finish())
    assert held > 100 * 1024, "the data before L1 should have been spilled"
    assert spill.held_bytes == 0, "the spill area should be emptied once all tables are read"

    with pytest.raises(ImageError, match=r"max_spill_bytes"):
        read_through(Qcow2Reader, image, limits=ReaderLimits(max_spill_bytes=64 * 1024))


WORKLOAD_CONFIGS = (
    "cluster_size=512",
    "compat=0.10,cluster_size=4k",
    "extended_l2=on,cluster_size=16k",
    "extended_l2=on,cluster_size=128k",
    "lazy_refcounts=on,cluster_size=64k",
    "refcount_bits=64,cluster_size=2M",
)


@needs_qemu_io
@pytest.mark.parametrize("seed", range(len(WORKLOAD_CONFIGS)))
def test_random_qemu_io_workload(tmp_path: Path, seed: int) -> None:
    """Random writes, zero writes, discards and snapshots, in one to three sessions.

    (No compressed writes: qemu 7.2 corrupts images when ``write -c`` is mixed with other
    writes in one session, reusing a freed cluster for compressed data.)
    """
    rng = random.Random(seed)
    size = rng.choice((1, 3)) * MiB + rng.choice((0, 512, 7 * 512))
    image = tmp_path / "work.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", WORKLOAD_CONFIGS[seed], image, str(size))
    for session in range(rng.randint(1, 3)):
        commands = []
        for _ in range(rng.randint(5, 30)):
            offset = rng.randrange(size // 512) * 512
            length = min(rng.choice((512, 4096, 65536, 300 * 512, MiB)), size - offset)
            verb = rng.choice((f"write -P {rng.randint(1, 255)}", "write -z", "discard"))
            commands.append(f"{verb} {offset} {length}")
        qemu_io(image, *commands)
        if rng.random() < 0.5:
            qemu_img("snapshot", "-c", f"snap{session}", image)
    assert_reads_like_qemu(image, tmp_path, seeds=2)


def test_dirty_bit_is_accepted(tmp_path: Path) -> None:
    image = make_qcow2(tmp_path, "cluster_size=4k", size=MiB)
    blob = image.read_bytes()
    incompatible = struct.unpack_from(">Q", blob, 72)[0]
    image.write_bytes(patched(blob, 72, ">Q", incompatible | 1))
    assert_reads_like_qemu(image, tmp_path, seeds=1)


def test_unknown_header_extension_is_skipped(tmp_path: Path) -> None:
    image = make_qcow2(tmp_path, "cluster_size=4k", size=MiB)
    blob = bytearray(image.read_bytes())
    header_length = struct.unpack_from(">I", blob, 100)[0]
    # insert an unknown extension of 5 bytes (padded to 8) before the existing ones
    existing = bytes(blob[header_length:2048])
    extra = struct.pack(">II", 0x12345678, 5) + b"hello\0\0\0"
    blob[header_length:2048] = (extra + existing)[: 2048 - header_length]
    image.write_bytes(bytes(blob))
    assert_reads_like_qemu(image, tmp_path, seeds=1)


def test_runs_are_bounded_and_never_overlap(tmp_path: Path) -> None:
    image = make_qcow2(tmp_path, "cluster_size=2M")
    blob = image.read_bytes()
    reader = Qcow2Reader(ReaderLimits(), MemorySpill())
    runs = list(reader.feed(blob)) + list(reader.finish())
    assert runs and max(len(run.data) for run in runs) <= RUN_MAX_BYTES
    spans = sorted((run.offset, run.offset + len(run.data)) for run in runs)
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
    assert all(any(run.data) for run in runs), "zero runs are skipped"


def test_sniff() -> None:
    assert sniff(b"QFI\xfb\x00\x00\x00\x03")
    assert not sniff(b"QFI")
    assert not sniff(b"KDMV\x01\x00\x00\x00")


# -- refusals: header ---------------------------------------------------------------------


def test_refuses_bad_magic(plain: bytes) -> None:
    with pytest.raises(ImageError, match=r"bad magic"):
        read_blob(b"QFJ\xfb" + plain[4:])


def test_refuses_unknown_version(plain: bytes) -> None:
    with pytest.raises(ImageError, match=r"version 4"):
        read_blob(patched(plain, 4, ">I", 4))


@pytest.mark.parametrize("bits", [8, 22, 0, 63])
def test_refuses_cluster_bits_out_of_range(plain: bytes, bits: int) -> None:
    with pytest.raises(ImageError, match=rf"cluster_bits {bits} out of range"):
        read_blob(patched(plain, 20, ">I", bits))


@pytest.mark.parametrize("cut", [0, 3, 71, 100, 119])
def test_refuses_a_file_ending_inside_the_header(plain: bytes, cut: int) -> None:
    with pytest.raises(ImageError, match=r"before the header is complete"):
        read_blob(plain[:cut])


def test_refuses_backing_file(plain: bytes) -> None:
    with pytest.raises(UnsupportedImage, match=r"backing file"):
        read_blob(patched(plain, 8, ">QI", 512, 8))


def test_refuses_external_data_file(plain: bytes) -> None:
    with pytest.raises(UnsupportedImage, match=r"external data file"):
        read_blob(patched(plain, 72, ">Q", 1 << 2))


@pytest.mark.parametrize(("method", "name"), [(1, "AES"), (2, "LUKS"), (9, "unknown")])
def test_refuses_encryption(plain: bytes, method: int, name: str) -> None:
    with pytest.raises(UnsupportedImage, match=rf"encrypted.*{name}"):
        read_blob(patched(plain, 32, ">I", method))


def test_refuses_unknown_incompatible_bits_by_number(plain: bytes) -> None:
    with pytest.raises(UnsupportedImage, match=r"unknown incompatible feature bits set: 5, 40"):
        read_blob(patched(plain, 72, ">Q", 1 << 5 | 1 << 40))


def test_refuses_corrupt_bit_as_bad_image(plain: bytes) -> None:
    with pytest.raises(ImageError, match=r"marked corrupt") as caught:
        read_blob(patched(plain, 72, ">Q", 1 << 1))
    assert not isinstance(caught.value, UnsupportedImage)


def test_refuses_absurd_virtual_size(plain: bytes) -> None:
    with pytest.raises(ImageError, match=r"exceeds the limit"):
        read_blob(patched(plain, 24, ">Q", 1 << 60))
    with pytest.raises(ImageError, match=r"exceeds the limit"):
        read_blob(plain, ReaderLimits(max_virtual_bytes=MiB))


def test_refuses_l1_table_too_small_for_the_virtual_size(plain: bytes) -> None:
    with pytest.raises(ImageError, match=r"too small for a virtual size"):
        read_blob(patched(plain, 24, ">Q", 1 << 40))


def test_refuses_huge_l1_table(plain: bytes) -> None:
    with pytest.raises(ImageError, match=r"max_metadata_bytes"):
        read_blob(patched(plain, 36, ">I", 0xFFFF_FFFF))


@pytest.mark.parametrize(
    ("offset", "message"),
    [(4096 + 8, "L1 table offset .* not cluster aligned"), (0, "L1 .* inside the header")],
)
def test_refuses_bad_l1_offset(plain: bytes, offset: int, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        read_blob(patched(plain, 40, ">Q", offset))


def test_refuses_l1_table_past_the_end_of_the_file(plain: bytes) -> None:
    with pytest.raises(ImageError, match=r"truncated.*L1 table"):
        read_blob(patched(plain, 40, ">Q", 1 << 30))


def test_refuses_bad_compression_type_fields(plain: bytes) -> None:
    assert struct.unpack_from(">I", plain, 100)[0] > 104, "v3 header with compression_type"
    with pytest.raises(ImageError, match=r"without the compression type feature bit"):
        read_blob(patched(plain, 104, ">B", 1))
    with_bit = patched(plain, 72, ">Q", 1 << 3)
    with pytest.raises(ImageError, match=r"compression type feature bit set"):
        read_blob(with_bit)
    with pytest.raises(UnsupportedImage, match=r"unknown compression type 7"):
        read_blob(patched(with_bit, 104, ">B", 7))


def test_refuses_extended_l2_with_small_clusters(plain: bytes) -> None:
    with pytest.raises(ImageError, match=r"at least 16384 bytes"):
        read_blob(patched(plain, 72, ">Q", 1 << 4))


def test_refuses_bad_header_length_and_refcount_order(plain: bytes) -> None:
    with pytest.raises(ImageError, match=r"header_length 96 is shorter"):
        read_blob(patched(plain, 100, ">I", 96))
    with pytest.raises(ImageError, match=r"exceeds the cluster size"):
        read_blob(patched(plain, 100, ">I", 8192))
    with pytest.raises(ImageError, match=r"refcount_order 7"):
        read_blob(patched(plain, 96, ">I", 7))


def test_refuses_header_extension_past_the_first_cluster(plain: bytes) -> None:
    header_length = struct.unpack_from(">I", plain, 100)[0]
    with pytest.raises(ImageError, match=r"header extension .* runs past offset 4096"):
        read_blob(patched(plain, header_length, ">II", 0x12345678, 8000))


# -- refusals: tables and data ------------------------------------------------------------


def test_refuses_unaligned_l2_table(plain: bytes) -> None:
    l1 = header(plain)["l1_offset"]
    with pytest.raises(ImageError, match=r"L2 table offset .* not cluster aligned"):
        read_blob(patched(plain, l1, ">Q", l1_entry(plain, 0) + 512))


def test_refuses_l2_table_inside_the_l1_table(plain: bytes) -> None:
    l1 = header(plain)["l1_offset"]
    with pytest.raises(ImageError, match=r"L2 table .* overlaps the L1 table"):
        read_blob(patched(plain, l1, ">Q", l1))


def test_refuses_l2_table_referenced_twice(small_clusters: bytes) -> None:
    blob = small_clusters
    assert l1_entry(blob, 0) and l1_entry(blob, 1)
    l1 = header(blob)["l1_offset"]
    with pytest.raises(ImageError, match=r"referenced twice"):
        read_blob(patched(blob, l1 + 8, ">Q", l1_entry(blob, 0)))


def test_refuses_l2_table_that_is_also_data(small_clusters: bytes) -> None:
    blob = small_clusters
    l1 = header(blob)["l1_offset"]
    data = struct.unpack_from(">Q", blob, first_l2(blob) + 8 * first_l2_entry_index(blob))[0]
    # the second L2 table is placed where the first table maps a data cluster
    with pytest.raises(ImageError, match=r"overlaps|mapped twice"):
        read_blob(patched(blob, l1 + 8, ">Q", data))


def test_refuses_data_cluster_mapped_twice(plain: bytes) -> None:
    table = first_l2(plain)
    index = first_l2_entry_index(plain)
    (entry,) = struct.unpack_from(">Q", plain, table + 8 * index)
    with pytest.raises(ImageError, match=r"overlaps|mapped twice"):
        read_blob(patched(plain, table + 8 * (index + 1), ">Q", entry))


def test_refuses_data_cluster_on_top_of_its_l2_table(plain: bytes) -> None:
    table = first_l2(plain)
    index = first_l2_entry_index(plain)
    with pytest.raises(ImageError, match=r"overlaps|mapped twice"):
        read_blob(patched(plain, table + 8 * index, ">Q", 1 << 63 | table))


def test_refuses_unaligned_data_cluster(plain: bytes) -> None:
    table = first_l2(plain)
    index = first_l2_entry_index(plain)
    (entry,) = struct.unpack_from(">Q", plain, table + 8 * index)
    with pytest.raises(ImageError, match=r"data cluster offset .* not cluster aligned"):
        read_blob(patched(plain, table + 8 * index, ">Q", entry + 512))


def test_refuses_compressed_cluster_inside_the_header(compressed: bytes) -> None:
    """Aligned offsets inside the header cluster are 0 (unallocated); compressed ones aren't."""
    table = first_l2(compressed)
    index = first_l2_entry_index(compressed, compressed=True)
    with pytest.raises(ImageError, match=r"compressed cluster .* inside the header cluster"):
        read_blob(patched(compressed, table + 8 * index, ">Q", 1 << 62 | 200))


def test_refuses_data_and_tables_past_the_end_of_the_file(plain: bytes) -> None:
    table = first_l2(plain)
    index = first_l2_entry_index(plain)
    far = 1 << 40
    with pytest.raises(ImageError, match=r"truncated: the data cluster .* past the end"):
        read_blob(patched(plain, table + 8 * index, ">Q", 1 << 63 | far))
    l1 = header(plain)["l1_offset"]
    with pytest.raises(ImageError, match=r"truncated: the L2 table .* past the end"):
        read_blob(patched(plain, l1, ">Q", 1 << 63 | far))


def test_refuses_a_file_cut_short(plain: bytes) -> None:
    cut = len(plain) - 4096 - 100
    with pytest.raises(ImageError, match=r"truncated"):
        read_blob(plain[:cut])
    with pytest.raises(ImageError, match=r"truncated"):
        read_blob(plain[: first_l2(plain) + 100])


def test_refuses_compressed_cluster_that_does_not_inflate(compressed: bytes) -> None:
    table = first_l2(compressed)
    offset_bits = 62 - (12 - 8)  # 4 KiB clusters: 4 bits of extra sectors
    for index in range(4096 // 8):
        (entry,) = struct.unpack_from(">Q", compressed, table + 8 * index)
        if entry >> 62 & 1 and entry >> offset_bits & 0xF >= 2:
            break
    else:
        raise AssertionError("no compressed cluster spanning three sectors")
    host = entry & ((1 << offset_bits) - 1)
    garbage = patched(compressed, host, ">Q", 0xFFFF_FFFF_FFFF_FFFF)
    with pytest.raises(ImageError, match=r"compressed cluster at .* decompress"):
        read_blob(garbage)
    # claim a single sector: the stream ends before a whole cluster came out
    one_sector = entry & ~(((1 << 4) - 1) << offset_bits)
    short = patched(compressed, table + 8 * index, ">Q", one_sector)
    with pytest.raises(ImageError, match=r"compressed cluster at .* decompress"):
        read_blob(short)


def test_compressed_cluster_cut_by_the_end_of_the_file(compressed: bytes) -> None:
    """The last compressed cluster may end mid-sector at EOF: fine if its stream is whole."""
    table = first_l2(compressed)
    offset_bits = 62 - (12 - 8)
    entries = struct.unpack_from(">512Q", compressed, table)
    last = max(entry & ((1 << offset_bits) - 1) for entry in entries if entry >> 62 & 1)
    assert last > table, "the last compressed cluster comes after the table"
    inflater = zlib.decompressobj(-15)
    tail = compressed[last : last + 8192]
    assert len(inflater.decompress(tail)) == 4096 and inflater.eof
    stream_end = last + len(tail) - len(inflater.unused_data)
    assert stream_end % 512, "cutting inside the last sector"
    full = read_blob(compressed)
    assert read_blob(compressed[:stream_end]) == full
    with pytest.raises(ImageError, match=r"truncated: file ends inside the compressed cluster"):
        read_blob(compressed[: last + 16])


def test_refuses_subcluster_both_allocated_and_zero(tmp_path: Path) -> None:
    blob = make_qcow2(tmp_path, "extended_l2=on", "cluster_size=16k", size=MiB).read_bytes()
    table = first_l2(blob)
    index = first_l2_entry_index(blob, entry_bytes=16)
    bitmap_at = table + 16 * index + 8
    (bitmap,) = struct.unpack_from(">Q", blob, bitmap_at)
    lowest = bitmap & -bitmap
    assert 0 < lowest < 1 << 32, "some subcluster is allocated"
    with pytest.raises(ImageError, match=r"both allocated and zero"):
        read_blob(patched(blob, bitmap_at, ">Q", bitmap | lowest << 32))
    no_host = patched(blob, table + 16 * index, ">Q", 0)
    with pytest.raises(ImageError, match=r"allocated subclusters but no host offset"):
        read_blob(no_host)


def test_refuses_tables_beyond_the_metadata_limit(plain: bytes, small_clusters: bytes) -> None:
    with pytest.raises(ImageError, match=r"L2 table buffer .*max_metadata_bytes"):
        read_blob(plain, ReaderLimits(max_metadata_bytes=2048))
    with pytest.raises(ImageError, match=r"L1 table .*max_metadata_bytes"):
        read_blob(small_clusters, ReaderLimits(max_metadata_bytes=1024))
