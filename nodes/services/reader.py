"""The read coordinator on this node: extents out, from whichever copy answers.

Theory of operation
-------------------
A read takes a linearizable read point first, then for each extent: a hole reads as
zeros; otherwise the stored bytes come from the local replica if there is one, else
another UP one; a checksum mismatch or a dead peer falls through to the next replica,
and the bad copy is rewritten from the good one in the background. An erasure-coded
group has one copy: when it fails, the covering chunks are rebuilt from the strip
(``StripReader``) and the copy is repaired. Extents are fetched a few ahead of the one
being streamed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fabric import limits
from fabric.config import ClusterConfig
from fabric.errors import FabricError, Unavailable
from fabric.extents import codec
from fabric.metadata.records import EgroupRecord, ExtentRecord, VdiskRecord
from fabric.ports import Clock, Offload, PeerUnreachable
from fabric.wire.messages import ExtentData, ReadExtent, RepairExtent
from nodes.services.catalog import Catalog
from nodes.services.metadata import MetadataService
from nodes.services.replicas import ReplicaClient
from nodes.services.strips import StripReader

log = logging.getLogger(__name__)


@dataclass
class ReadStats:
    degraded_reads: int = 0
    repairs: int = 0


class ReadCoordinator:
    def __init__(
        self,
        node_id: str,
        config: ClusterConfig,
        clock: Clock,
        metadata: MetadataService,
        catalog: Catalog,
        replicas: ReplicaClient,
        strips: StripReader,
        offload: Offload,
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.metadata = metadata
        self.catalog = catalog
        self.replicas = replicas
        self.strips = strips
        self.offload = offload
        self.extent_bytes = config.extent_bytes
        self.stats = ReadStats()
        self._repairs: set[asyncio.Future[None]] = set()
        self._unanswered: dict[str, float] = {}
        """node -> when a read from it last went unanswered (dead, say, but not yet DOWN)."""

    # --- read -------------------------------------------------------------------------------
    async def read(
        self, ref: str, offset: int, length: int | None
    ) -> tuple[VdiskRecord, int, AsyncIterator[bytes]]:
        """(vdisk, length, stream of the bytes); range checks happen before streaming."""
        await self.metadata.read_index()
        vd = self.catalog.vdisk(ref)
        if length is None:
            length = max(0, vd.size - offset)
        self.catalog.check_range(vd, offset, length)
        return vd, length, self._stream(vd, offset, length)

    async def _stream(self, vd: VdiskRecord, offset: int, length: int) -> AsyncIterator[bytes]:
        e = self.extent_bytes
        if length == 0:
            return
        first, last = offset // e, (offset + length - 1) // e
        pending: dict[int, asyncio.Task[bytes | None]] = {}
        try:
            for index in range(first, last + 1):
                for ahead in range(index, min(index + limits.READ_AHEAD_EXTENTS, last + 1)):
                    if ahead not in pending:
                        pending[ahead] = asyncio.ensure_future(self.fetch(vd, ahead))
                raw = await pending.pop(index)
                lo = max(offset, index * e) - index * e
                hi = min(offset + length, (index + 1) * e) - index * e
                yield raw[lo:hi] if raw is not None else bytes(hi - lo)
        finally:
            for task in pending.values():
                task.cancel()

    async def fetch(self, vd: VdiskRecord, index: int) -> bytes | None:
        """The raw bytes of extent ``index`` of ``vd`` (None for a hole)."""
        extent_id = self.metadata.state.map_entry(vd.id, index)
        if not extent_id:
            return None
        ext = self.metadata.state.extent(vd.container, extent_id)
        if ext is None:
            raise Unavailable(f"extent {extent_id} of {vd.name} vanished; retry the read")
        stored = await self.read_stored(ext)
        if not ext.compressed:
            # Only a checksum to check (tens of microseconds a MiB): less than the hop
            # to a worker thread and back would cost.
            return codec.decode(stored, False, ext.raw_len, ext.checksum)
        raw: bytes = await self.offload(
            codec.decode, stored, ext.compressed, ext.raw_len, ext.checksum
        )
        return raw

    def _silent(self, node: str) -> bool:
        """Did ``node`` leave a read unanswered within ``READ_PASS_OVER_S``?"""
        when = self._unanswered.get(node)
        return when is not None and self.clock.now() - when < limits.READ_PASS_OVER_S

    def _replica_order(self, replicas: tuple[str, ...]) -> list[str]:
        live = self.metadata.state.up_nodes()
        up = [n for n in replicas if n in live and not self._silent(n)]
        rest = [n for n in replicas if n not in up]
        ordered = sorted(up, key=lambda n: n != self.node_id) + rest
        return ordered

    def _is_down(self, node: str) -> bool:
        record = self.metadata.state.nodes().get(node)
        return record is not None and record.state == "DOWN"

    async def read_stored(self, ext: ExtentRecord) -> bytes:
        eg = self.metadata.state.egroup(ext.egroup)
        if eg is None:
            raise Unavailable(f"extent group {ext.egroup} is gone; retry the read")
        msg = ReadExtent(ext.egroup, ext.offset, ext.stored_len)
        bad: list[str] = []
        failing: list[str] = []
        errors: list[str] = []
        for node in self._replica_order(eg.replicas):
            if eg.strip and (self._is_down(node) or self._silent(node)):
                # Its one copy is lost or its node just left a read unanswered: rebuild
                # at once rather than wait on a node that may hang until the timeout.
                errors.append(f"{node}: DOWN or silent")
                continue
            try:
                reply = await self.replicas.call_storage(node, msg)
            except (PeerUnreachable, FabricError) as exc:
                errors.append(f"{node}: {exc}")
                self.stats.degraded_reads += 1
                if isinstance(exc, FabricError):
                    failing.append(node)  # it answered: its copy may be mended
                else:
                    self._unanswered[node] = self.clock.now()
                continue
            self._unanswered.pop(node, None)
            assert isinstance(reply, ExtentData)
            if codec.checksum(reply.data) != ext.checksum:
                log.warning(
                    "checksum mismatch for extent at %s:%d on %s",
                    ext.egroup,
                    ext.offset,
                    node,
                )
                errors.append(f"{node}: checksum mismatch")
                bad.append(node)
                continue
            for node_bad in bad:
                task = asyncio.ensure_future(self._repair(node_bad, ext, reply.data))
                self._repairs.add(task)
                task.add_done_callback(self._repairs.discard)
            return reply.data
        if eg.strip:
            return await self._read_from_strip(eg, ext, errors, bad + failing)
        raise Unavailable(f"no readable copy of an extent in {ext.egroup}: " + "; ".join(errors))

    async def _read_from_strip(
        self, eg: EgroupRecord, ext: ExtentRecord, errors: list[str], answered: list[str]
    ) -> bytes:
        """Degraded read: rebuild the extent from the strip, then mend its one copy if its
        node ``answered`` (with bad bytes or an error); a node that did not answer is left
        to the member rebuild if it stays away."""
        data = await self.strips.read_degraded(eg, ext.offset, ext.stored_len)
        if codec.checksum(data) != ext.checksum:
            self.strips.forget(eg)
            raise Unavailable(
                f"extent in {ext.egroup} unreadable and not rebuildable: " + "; ".join(errors)
            )
        if eg.replicas and eg.replicas[0] in answered:
            task = asyncio.ensure_future(self._repair(eg.replicas[0], ext, data))
            self._repairs.add(task)
            task.add_done_callback(self._repairs.discard)
        return data

    async def _repair(self, node: str, ext: ExtentRecord, stored: bytes) -> None:
        try:
            await self.replicas.call_storage(node, RepairExtent(ext.egroup, ext.offset, stored))
            self.stats.repairs += 1
        except (PeerUnreachable, FabricError) as exc:
            log.warning("could not repair %s on %s: %s", ext.egroup, node, exc)
