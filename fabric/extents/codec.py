"""How an extent's bytes are named, compressed and checked (pure functions).

* content id: the name of a deduplicated extent. With the cluster's dedup key it is
  BLAKE3 in keyed mode, 128 bits (``k`` ids): nobody without the key can compute one,
  so nobody can craft bytes whose id collides with another user's block. Without a key
  (a one-part benchmark, or extents written before release 0.4) it is xxh3-128 (``h``
  ids), a hash built for speed, not against an adversary. The two never collide (the
  prefix differs); data written under ``h`` ids keeps them and still reads;
* stored form: zstd when it saves at least the policy's ratio, else the raw bytes;
* checksum: xxh3-64 of the *stored* bytes, verified on every read before decompression,
  so corruption on disk is caught without trusting the decompressor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import blake3
import xxhash
import zstandard

from fabric.extents.policy import ContainerPolicy


class CorruptExtent(Exception):
    """Stored bytes do not match their checksum or do not decompress (an operating fault)."""


@dataclass(frozen=True, slots=True)
class Encoded:
    stored: bytes
    compressed: bool
    raw_len: int
    checksum: int


@lru_cache(maxsize=8)
def _zeros(n: int) -> bytes:
    return bytes(n)


def is_zero(data: bytes) -> bool:
    """All-zero extents are holes: they cost nothing and are never stored."""
    return data == _zeros(len(data))


def content_id(data: bytes, key: bytes | None = None) -> str:
    """The dedup name of ``data``: ``k`` + keyed BLAKE3 with ``key``, else ``h`` + xxh3."""
    if key is None:
        return "h" + xxhash.xxh3_128_hexdigest(data)
    return "k" + blake3.blake3(data, key=key).hexdigest(length=CONTENT_ID_BYTES)


CONTENT_ID_BYTES = 16
"""128 bits: a collision by chance needs ~2^64 distinct extents; on purpose, the key."""


def checksum(stored: bytes) -> int:
    return xxhash.xxh3_64_intdigest(stored)


def checksum_parts(parts: Iterable[bytes | memoryview]) -> int:
    """``checksum`` of the parts joined, without joining them."""
    h = xxhash.xxh3_64()
    for part in parts:
        h.update(part)
    return h.intdigest()


# zstd contexts are not thread-safe and the real runtime encodes in worker threads: each
# call makes its own (microseconds, next to compressing a whole extent).
def _compressor(level: int) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=level)


COMPRESS_PROBE_BYTES = 64 << 10
"""A larger extent is compressed only if its first this many bytes compress well enough:
incompressible data (already compressed, encrypted, random) then costs a 64 KiB attempt,
not a whole failed one."""


def encode(raw: bytes, policy: ContainerPolicy) -> Encoded:
    if policy.compression == "zstd" and _worth_compressing(raw, policy):
        packed = _compressor(policy.compression_level).compress(raw)
        if len(packed) <= len(raw) * (1 - policy.min_saving_ratio):
            return Encoded(packed, True, len(raw), checksum(packed))
    return Encoded(raw, False, len(raw), checksum(raw))


def _worth_compressing(raw: bytes, policy: ContainerPolicy) -> bool:
    if len(raw) < 2 * COMPRESS_PROBE_BYTES:
        return True
    probe = memoryview(raw)[:COMPRESS_PROBE_BYTES]
    packed = _compressor(policy.compression_level).compress(probe)
    return len(packed) <= COMPRESS_PROBE_BYTES * (1 - policy.min_saving_ratio)


def decode(stored: bytes, compressed: bool, raw_len: int, expect_checksum: int) -> bytes:
    if checksum(stored) != expect_checksum:
        raise CorruptExtent("stored bytes do not match their checksum")
    if not compressed:
        if len(stored) != raw_len:
            raise CorruptExtent(f"extent is {len(stored)} bytes, expected {raw_len}")
        return stored
    try:
        raw = zstandard.ZstdDecompressor().decompress(stored, max_output_size=raw_len)
    except zstandard.ZstdError as exc:
        raise CorruptExtent(f"extent does not decompress: {exc}") from exc
    if len(raw) != raw_len:
        raise CorruptExtent(f"extent decompresses to {len(raw)} bytes, expected {raw_len}")
    return raw
