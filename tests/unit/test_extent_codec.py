"""An extent's stored form: compressed when that pays, raw when it cannot, always checked."""

from __future__ import annotations

import random

import pytest

from fabric.extents import codec
from fabric.extents.policy import ContainerPolicy

ZSTD = ContainerPolicy(compression="zstd")
MiB = 1 << 20


def text(n: int) -> bytes:
    return b"".join(b"%08d the quick brown fox\n" % i for i in range(n // 20))[:n]


@pytest.mark.parametrize("size", [4096, MiB])
def test_compressible_extents_are_stored_compressed_and_read_back(size: int) -> None:
    raw = text(size)
    enc = codec.encode(raw, ZSTD)
    assert enc.compressed and len(enc.stored) < size // 2
    assert codec.decode(enc.stored, True, size, enc.checksum) == raw


def test_incompressible_extents_are_stored_raw() -> None:
    raw = random.Random(1).randbytes(MiB)
    enc = codec.encode(raw, ZSTD)
    assert not enc.compressed and enc.stored is raw


def test_an_extent_whose_head_does_not_compress_is_not_tried_whole() -> None:
    # The probe of the first 64 KiB decides: random there means raw, even if the rest
    # would have compressed (the price of not compressing whole random extents).
    head = random.Random(2).randbytes(codec.COMPRESS_PROBE_BYTES)
    raw = head + text(MiB - len(head))
    assert not codec.encode(raw, ZSTD).compressed
    # A compressible head is compressed whole, even if the rest is random.
    raw = text(codec.COMPRESS_PROBE_BYTES) + random.Random(3).randbytes(
        MiB - codec.COMPRESS_PROBE_BYTES
    )
    enc = codec.encode(raw, ContainerPolicy(compression="zstd", min_saving_ratio=0.01))
    assert enc.compressed
    assert codec.decode(enc.stored, True, MiB, enc.checksum) == raw


def test_corrupt_stored_bytes_are_caught_before_decompression() -> None:
    enc = codec.encode(text(MiB), ZSTD)
    bad = bytes([enc.stored[0] ^ 1]) + enc.stored[1:]
    with pytest.raises(codec.CorruptExtent, match="checksum"):
        codec.decode(bad, True, MiB, enc.checksum)


def test_a_keyed_content_id_depends_on_the_key_and_never_equals_an_unkeyed_one() -> None:
    data = b"the same block" * 1000
    a, b = codec.content_id(data, b"a" * 32), codec.content_id(data, b"b" * 32)
    assert a == codec.content_id(data, b"a" * 32), "deterministic for one cluster"
    assert a != b and a.startswith("k") and len(a) == 1 + 2 * codec.CONTENT_ID_BYTES
    assert codec.content_id(data).startswith("h")
    assert codec.content_id(data + b"!", b"a" * 32) != a
