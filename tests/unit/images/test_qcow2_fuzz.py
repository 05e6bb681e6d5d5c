"""Fuzzing Qcow2Reader: mutated and truncated real images, and hostile size claims.

The invariant for every input: the reader returns runs that lie inside the virtual size
and never overlap, or raises ImageError; nothing else. Memory stays bounded even when the
header claims huge tables.
"""

from __future__ import annotations

import itertools
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.images.base import ImageError, MemorySpill, ReaderLimits
from fabric.images.qcow2 import Qcow2Reader
from tests.imagekit import convert, make_mixed_raw, needs_qemu

KiB = 1024
MiB = 1024 * KiB
FUZZ_EXAMPLES = 300
HEADER_REGION_BYTES = 512
CHUNK_SIZES = (61, 509, 4096, 65536, MiB)

BASE_OPTIONS = {
    "v3, 4 KiB clusters": ("cluster_size=4k",),
    "v2, 512 B clusters": ("compat=0.10", "cluster_size=512"),
    "zlib, 4 KiB clusters": ("-c", "cluster_size=4k"),
    "zstd, 16 KiB clusters, extended L2": (
        "-c",
        "compression_type=zstd",
        "extended_l2=on",
        "cluster_size=16k",
    ),
    "preallocated metadata, 4 KiB clusters": ("preallocation=metadata", "cluster_size=4k"),
}


def regions(blob: bytes) -> dict[str, tuple[int, int]]:
    """Where the header, the L1 table and the first L2 table of a real image lie."""
    cluster = 1 << struct.unpack_from(">I", blob, 20)[0]
    l1_entries, l1_offset = struct.unpack_from(">IQ", blob, 36)
    l2 = struct.unpack_from(">Q", blob, l1_offset)[0] & 0x00FF_FFFF_FFFF_FE00
    return {
        "header": (0, HEADER_REGION_BYTES),
        "l1": (l1_offset, l1_offset + 8 * l1_entries),
        "l2": (l2, l2 + cluster),
        "anywhere": (0, len(blob)),
    }


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("fuzz")
    raw = tmp / "small.raw"
    make_mixed_raw(raw, 384 * KiB + 1000, seed=5, block=16 * KiB)
    return {
        name: convert(raw, tmp / f"{index}.qcow2", "qcow2", *options).read_bytes()
        for index, (name, options) in enumerate(BASE_OPTIONS.items())
    }


def read_checked(blob: bytes, chunk: int, limits: ReaderLimits | None = None) -> None:
    """Read ``blob``; ImageError is fine, and so are runs that respect the contract."""
    reader = Qcow2Reader(limits or ReaderLimits(), MemorySpill())
    spans: list[tuple[int, int]] = []
    try:
        for at in range(0, len(blob), chunk):
            spans += [
                (r.offset, r.offset + len(r.data)) for r in reader.feed(blob[at : at + chunk])
            ]
        spans += [(r.offset, r.offset + len(r.data)) for r in reader.finish()]
    except ImageError:
        return
    size = reader.virtual_size
    assert size is not None
    spans.sort()
    assert all(0 <= start < end <= size for start, end in spans), "run outside the disk"
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))


def table_entries(file_bytes: int) -> st.SearchStrategy[int]:
    """L1/L2 entries worth trying: offsets into (or just past) the file, compressed, junk."""
    offsets = st.integers(0, file_bytes + 64 * KiB)
    return st.one_of(
        offsets.map(lambda off: 1 << 63 | off & ~511),
        offsets.map(lambda off: 1 << 63 | off),
        st.tuples(offsets, st.integers(0, 63)).map(lambda t: 1 << 62 | t[1] << 56 | t[0]),
        st.integers(0, (1 << 64) - 1),
    )


@st.composite
def mutated(draw: st.DrawFn, bases: dict[str, bytes]) -> tuple[bytes, int]:
    blob = bytearray(bases[draw(st.sampled_from(sorted(bases)))])
    where = regions(bytes(blob))
    for _ in range(draw(st.integers(0, 8))):
        lo, hi = where[draw(st.sampled_from(sorted(where)))]
        at = draw(st.integers(lo, max(lo, min(hi, len(blob)) - 8)))
        kind = draw(st.sampled_from(("flip", "byte", "entry")))
        if kind == "flip":
            blob[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            blob[at] = draw(st.integers(0, 255))
        else:
            at -= at % 8
            struct.pack_into(">Q", blob, at, draw(table_entries(len(blob))))
    if draw(st.integers(0, 3)) == 0:
        del blob[draw(st.integers(0, len(blob))) :]
    return bytes(blob), draw(st.sampled_from(CHUNK_SIZES))


@needs_qemu
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_images_parse_or_raise_image_error(
    bases: dict[str, bytes], data: st.DataObject
) -> None:
    blob, chunk = data.draw(mutated(bases))
    read_checked(blob, chunk)


@needs_qemu
def test_unmutated_bases_read_cleanly(bases: dict[str, bytes]) -> None:
    for blob in bases.values():
        reader = Qcow2Reader(ReaderLimits(), MemorySpill())
        list(reader.feed(blob))
        list(reader.finish())


# -- hostile size claims: memory stays bounded -------------------------------------------


def hand_made(cluster_bits: int, virtual_bytes: int, l1_entries: int, body: bytes) -> bytes:
    """A v3 header (no extensions) with the L1 table at cluster 1, followed by ``body``."""
    cluster = 1 << cluster_bits
    head = struct.pack(
        ">4sIQIIQIIQQIIQQQQII",
        b"QFI\xfb",
        3,
        0,
        0,
        cluster_bits,
        virtual_bytes,
        0,
        l1_entries,
        cluster,  # L1 table offset
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        4,
        104,
    )
    return head + bytes(cluster - len(head)) + body


def peak_bytes(blob: bytes, limits: ReaderLimits) -> tuple[int, str]:
    """Peak traced memory while reading ``blob`` (fed in 64 KiB chunks), and the error."""
    tracemalloc.start()
    try:
        error = ""
        reader = Qcow2Reader(limits, MemorySpill())
        try:
            for at in range(0, len(blob), 64 * KiB):
                for _ in reader.feed(blob[at : at + 64 * KiB]):
                    pass
            for _ in reader.finish():
                pass
        except ImageError as exc:
            error = str(exc)
        return tracemalloc.get_traced_memory()[1], error
    finally:
        tracemalloc.stop()


def test_huge_l1_claim_on_a_small_file_stays_small() -> None:
    """16 TiB with 4 KiB clusters: a 64 MiB L1 table is claimed, the file has 1 MiB."""
    entries = (16 * 1024**4) // (4 * KiB * 512)
    body = bytes(range(256)) * (4 * KiB)  # junk where the L1 table should be
    blob = hand_made(12, 16 * 1024**4, entries, body)
    peak, error = peak_bytes(blob, ReaderLimits())
    assert error, "the junk L1 table must be refused"
    assert peak < 4 * MiB, f"peak {peak} bytes"


def test_l1_full_of_distinct_tables_is_capped_by_the_metadata_limit() -> None:
    """Every L1 entry names a distinct L2 table far away: each costs memory, until refused."""
    cluster_bits = 9
    entries = 1 << 21  # 64 GiB with 512-byte clusters
    far = 1 << 40
    body = b"".join(struct.pack(">Q", far + i * 512) for i in range(MiB // 8))
    blob = hand_made(cluster_bits, entries << 15, entries, body)
    limits = ReaderLimits(max_metadata_bytes=2 * MiB)
    peak, error = peak_bytes(blob, limits)
    assert "max_metadata_bytes" in error
    assert peak < 8 * MiB, f"peak {peak} bytes"


def test_hostile_prefixes_of_a_hand_made_image() -> None:
    """Every prefix of a tiny hand-made image is refused cleanly or read."""
    blob = hand_made(9, 64 * KiB, 2, struct.pack(">QQ", 1 << 63 | 1024, 0) + bytes(496))
    table = bytearray(512)
    struct.pack_into(">Q", table, 0, 1 << 63 | 1536)
    blob += bytes(table) + b"\xab" * 512
    for cut in range(0, len(blob) + 1, 7):
        read_checked(blob[:cut], 61)
    reader = Qcow2Reader(ReaderLimits(), MemorySpill())
    runs = list(reader.feed(blob)) + list(reader.finish())
    assert [(r.offset, r.data) for r in runs] == [(0, b"\xab" * 512)]
