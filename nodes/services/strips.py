"""Reading an erasure-coded group whose one copy failed: rebuild from the strip.

A strip's data groups keep their bytes (the code is systematic) and each parity group
stores, per chunk, the k data-fragment headers plus one parity fragment. A degraded read
rebuilds the chunks that cover the wanted bytes from any k other members; the EC
service's member rebuild uses the same chunk reconstruction.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fabric.errors import FabricError, Unavailable
from fabric.extents import erasure
from fabric.metadata.records import EgroupRecord, StripRecord
from fabric.ports import Offload, PeerUnreachable
from fabric.wire.messages import ExtentData, ReadExtent
from nodes.services.metadata import MetadataService
from nodes.services.replicas import ReplicaClient


def layout_of(strip: StripRecord) -> erasure.Layout:
    return erasure.layout(strip.k, strip.m, strip.chunk_bytes)


@dataclass
class StripStats:
    degraded_reads: int = 0


class StripReader:
    def __init__(
        self, metadata: MetadataService, replicas: ReplicaClient, offload: Offload
    ) -> None:
        self.metadata = metadata
        self.replicas = replicas
        self.offload = offload
        self.stats = StripStats()

    async def chunk(self, egid: str, node: str, offset: int, length: int) -> bytes:
        reply = await self.replicas.call_storage(node, ReadExtent(egid, offset, length))
        assert isinstance(reply, ExtentData)
        return reply.data

    async def rebuild_chunk(
        self, strip: StripRecord, lay: erasure.Layout, want: int, c: int
    ) -> bytes:
        """Fragment ``want`` (with header) of chunk ``c``, from the other members."""
        k = strip.k
        reads = []
        for i, (egid, node) in enumerate((m.egid, m.node) for m in strip.members):
            if i == want:
                continue
            if i < k:
                reads.append((i, self.chunk(egid, node, c * lay.chunk_bytes, lay.chunk_bytes)))
            else:
                size = lay.parity_record_bytes
                reads.append((i, self.chunk(egid, node, c * size, size)))
        got = await asyncio.gather(*(r for _, r in reads), return_exceptions=True)
        data: dict[int, bytes] = {}
        parity: dict[int, bytes] = {}
        for (i, _), result in zip(reads, got, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, PeerUnreachable | FabricError):
                    raise result
                continue
            if i < k:
                data[i] = result
            elif len(result) == lay.parity_record_bytes:
                parity[i - k] = result
        try:
            frag: bytes = await self.offload(erasure.rebuild, lay, data, parity, want)
        except erasure.ErasureError as exc:
            raise Unavailable(f"strip {strip.id}: {exc}") from None
        return frag

    async def read_degraded(self, eg: EgroupRecord, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of an EC'd data group, rebuilt."""
        strip = self.metadata.state.strip(eg.strip)
        if strip is None:
            raise Unavailable(f"strip {eg.strip} of {eg.egid} is gone")
        lay = layout_of(strip)
        want = [m.egid for m in strip.data].index(eg.egid)
        c_size = lay.chunk_bytes
        out = bytearray()
        for c in range(offset // c_size, (offset + length - 1) // c_size + 1):
            frag = await self.rebuild_chunk(strip, lay, want, c)
            out += frag[lay.header_bytes :]
        self.stats.degraded_reads += 1
        start = offset - (offset // c_size) * c_size
        return bytes(out[start : start + length])
