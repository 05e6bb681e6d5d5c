"""Reading an erasure-coded group whose one copy failed: rebuild from the strip.

Theory of operation
-------------------
A strip's data groups keep their bytes (the code is systematic) and each parity group
stores, per chunk, the k data-fragment headers plus one parity fragment. A member is
rebuilt a window (``limits.EC_WINDOW_BYTES``, whole chunks) at a time: the same window
of ``k`` other members is fetched at once, one call each, choosing the cheapest ``k``
(one parity record, which carries the headers, then data members on UP nodes; others
only if some of those fail), and pyeclib rebuilds each chunk of it in a worker thread.

Degraded reads go through a small cache of rebuilt data windows
(``limits.EC_DEGRADED_CACHE_WINDOWS``), keyed by (strip, member, window). The extents of
a group lie back to back, so the next extent is mostly in the window just rebuilt, and
concurrent reads of one window share one rebuild. Asking for a window also starts the
rebuild of the member's next window (read-ahead), so a sequential read fetches the next
window while this one streams. The bytes of a sealed group never change, so a cached
window stays right for as long as its strip exists; the caller still checks every
extent against its checksum and evicts the member's windows on a mismatch (``forget``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

from fabric import limits
from fabric.errors import FabricError, Unavailable
from fabric.extents import erasure
from fabric.metadata.records import EgroupRecord, StripRecord
from fabric.ports import Offload, PeerUnreachable
from fabric.wire.messages import ExtentData, ReadExtent
from nodes.services.metadata import MetadataService
from nodes.services.replicas import ReplicaClient


def layout_of(strip: StripRecord) -> erasure.Layout:
    return erasure.layout(strip.k, strip.m, strip.chunk_bytes)


def window_chunks(lay: erasure.Layout) -> int:
    """Chunks per window of ``lay``: ``EC_WINDOW_BYTES`` of each member, fewer for a wide
    strip, so that the (2k + 3m) windows a conversion holds stay within
    ``EC_CONVERSION_BYTES`` (and a strip made with another chunk size still works)."""
    member_bytes = min(
        limits.EC_WINDOW_BYTES, limits.EC_CONVERSION_BYTES // (2 * lay.k + 3 * lay.m)
    )
    return max(1, member_bytes // lay.chunk_bytes)


@dataclass
class StripStats:
    degraded_reads: int = 0
    windows_rebuilt: int = 0


WindowKey = tuple[str, int, int]
"""(strip id, member index, window index)."""


class StripReader:
    def __init__(
        self, metadata: MetadataService, replicas: ReplicaClient, offload: Offload
    ) -> None:
        self.metadata = metadata
        self.replicas = replicas
        self.offload = offload
        self.stats = StripStats()
        self._windows: OrderedDict[WindowKey, asyncio.Future[bytes]] = OrderedDict()

    async def chunk(self, egid: str, node: str, offset: int, length: int) -> bytes:
        reply = await self.replicas.call_storage(node, ReadExtent(egid, offset, length))
        assert isinstance(reply, ExtentData)
        return reply.data

    # --- rebuilding fragments ---------------------------------------------------------------
    def _sources(self, strip: StripRecord, want: int) -> list[int]:
        """Member indexes to fetch from, cheapest first: a parity record (for the
        headers), data members on UP nodes, the other parity, members not UP; among
        each, those on this node first (no message to send)."""
        up = self.metadata.state.up_nodes()
        here = self.replicas.node_id
        members = sorted(
            ((i, m) for i, m in enumerate(strip.members) if i != want),
            key=lambda im: im[1].node != here,
        )
        data = [i for i, m in members if i < strip.k and m.node in up]
        parity = [i for i, m in members if i >= strip.k and m.node in up]
        rest = [i for i, m in members if m.node not in up]
        return parity[:1] + data + parity[1:] + rest

    async def _member_bytes(
        self, strip: StripRecord, lay: erasure.Layout, i: int, c0: int, n: int
    ) -> bytes:
        member = strip.members[i]
        size = lay.chunk_bytes if i < strip.k else lay.parity_record_bytes
        return await self.chunk(member.egid, member.node, c0 * size, n * size)

    async def rebuild_window(
        self, strip: StripRecord, lay: erasure.Layout, want: int, c0: int, n: int
    ) -> list[bytes]:
        """Fragment ``want`` (with its header) of chunks ``c0 .. c0 + n - 1``, from ``k``
        other members."""
        queue = self._sources(strip, want)
        data: dict[int, bytes] = {}
        parity: dict[int, bytes] = {}
        errors: list[str] = []
        while len(data) + len(parity) < lay.k or not parity:
            missing = max(1, lay.k - len(data) - len(parity))
            if not parity:
                # The headers live in the parity records: one of those must come back.
                queue.sort(key=lambda i: i < strip.k)
            batch, queue = queue[:missing], queue[missing:]
            if not batch:
                raise Unavailable(f"strip {strip.id}: too few members answer: " + "; ".join(errors))
            got = await asyncio.gather(
                *(self._member_bytes(strip, lay, i, c0, n) for i in batch), return_exceptions=True
            )
            for i, result in zip(batch, got, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, PeerUnreachable | FabricError):
                        raise result
                    errors.append(f"{strip.members[i].node}: {result}")
                elif i < strip.k:
                    data[i] = result
                elif len(result) == n * lay.parity_record_bytes:
                    parity[i - strip.k] = result
                else:
                    errors.append(f"{strip.members[i].node}: parity record cut short")
        try:
            frags: list[bytes] = await self.offload(
                erasure.rebuild_window, lay, data, parity, want, n
            )
        except erasure.ErasureError as exc:
            raise Unavailable(f"strip {strip.id}: {exc}") from None
        self.stats.windows_rebuilt += 1
        return frags

    # --- degraded reads ---------------------------------------------------------------------
    async def _data_window(self, strip: StripRecord, want: int, w: int) -> bytes:
        lay = layout_of(strip)
        per = window_chunks(lay)
        chunks = strip.length // lay.chunk_bytes
        c0 = w * per
        frags = await self.rebuild_window(strip, lay, want, c0, min(per, chunks - c0))
        return b"".join(memoryview(f)[lay.header_bytes :] for f in frags)

    def _window(self, strip: StripRecord, want: int, w: int) -> asyncio.Future[bytes]:
        key = (strip.id, want, w)
        fut = self._windows.get(key)
        if fut is not None:
            self._windows.move_to_end(key)
            return fut
        fut = asyncio.ensure_future(self._data_window(strip, want, w))
        self._windows[key] = fut
        fut.add_done_callback(lambda f: self._settled(key, f))
        while len(self._windows) > limits.EC_DEGRADED_CACHE_WINDOWS:
            # Dropped, not cancelled: a reader may be waiting on it.
            self._windows.popitem(last=False)
        return fut

    def _settled(self, key: WindowKey, fut: asyncio.Future[bytes]) -> None:
        failed = fut.cancelled() or fut.exception() is not None
        if failed and self._windows.get(key) is fut:
            del self._windows[key]  # not remembered: the next read tries again

    def forget(self, eg: EgroupRecord) -> None:
        """Drop the rebuilt windows of a data group (they failed an extent's checksum)."""
        for key in [k for k in self._windows if k[0] == eg.strip]:
            del self._windows[key]

    async def read_degraded(self, eg: EgroupRecord, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of an EC'd data group, rebuilt."""
        strip = self.metadata.state.strip(eg.strip)
        if strip is None:
            raise Unavailable(f"strip {eg.strip} of {eg.egid} is gone")
        want = [m.egid for m in strip.data].index(eg.egid)
        size = window_chunks(layout_of(strip)) * strip.chunk_bytes
        first, last = offset // size, (offset + length - 1) // size
        futures = [self._window(strip, want, w) for w in range(first, last + 1)]
        if (last + 1) * size < strip.length:
            self._window(strip, want, last + 1)  # read-ahead: the next extents are there
        # Shielded: a reader that gives up does not cancel a rebuild others share.
        parts = [await asyncio.shield(f) for f in futures]
        self.stats.degraded_reads += 1
        start = offset - first * size
        whole = parts[0] if len(parts) == 1 else b"".join(parts)
        return whole[start : start + length]
