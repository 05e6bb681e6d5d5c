"""Decompress one qcow2 compressed cluster, exactly as qemu does, with bounded output.

qemu stores a compressed cluster as a raw deflate stream (no zlib header, written with a
4 KiB window) or as zstd frames, followed by whatever lies in the rest of its last
512-byte sector. The stored size is therefore only an upper bound: decompression stops
once it has produced one cluster, and anything after that is ignored. A stream that ends
before a full cluster, or that is not valid, is a corrupt image. Output is never allowed
to grow past one cluster, so a decompression bomb costs at most a cluster of memory.
"""

from __future__ import annotations

import zlib

import zstandard

from fabric.images.base import ImageError
from fabric.images.qcow2_header import COMPRESSION_ZSTD

RAW_DEFLATE_WBITS = -15
"""Raw deflate, any window up to 32 KiB (qemu writes 4 KiB windows: -12)."""
ZSTD_MAX_WINDOW_BYTES = 8 * 1024 * 1024
"""Refuse zstd frames that ask for a bigger window: a cluster is at most 2 MiB."""


class ClusterInflater:
    """Turns compressed cluster bytes into exactly one cluster of guest data."""

    def __init__(self, compression: int, cluster_bytes: int) -> None:
        self._zstd = compression == COMPRESSION_ZSTD
        self._cluster_bytes = cluster_bytes
        self._zstd_ctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW_BYTES)

    def inflate(self, data: bytes, host: int) -> bytes:
        """Decompress the cluster stored at file offset ``host`` (for messages)."""
        try:
            out = self._unzstd(data) if self._zstd else self._inflate(data)
        except (zlib.error, zstandard.ZstdError) as exc:
            raise ImageError(
                f"qcow2: compressed cluster at offset {host:#x} fails to decompress: {exc}"
            ) from None
        if len(out) != self._cluster_bytes:
            raise ImageError(
                f"qcow2: compressed cluster at offset {host:#x} decompresses to {len(out)} "
                f"bytes, expected {self._cluster_bytes}"
            )
        return out

    def _inflate(self, data: bytes) -> bytes:
        return zlib.decompressobj(RAW_DEFLATE_WBITS).decompress(data, self._cluster_bytes)

    def _unzstd(self, data: bytes) -> bytes:
        reader = self._zstd_ctx.stream_reader(data, read_across_frames=True)
        out = bytearray()
        while len(out) < self._cluster_bytes:
            piece = reader.read(self._cluster_bytes - len(out))
            if not piece:
                break
            out += piece
        return bytes(out)
