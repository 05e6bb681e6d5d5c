"""The leader's background scanner: seal idle extent groups, collect empty ones, compact.

Theory of operation
-------------------
Every ``SCAN_EVERY_S`` the metadata leader walks the extent groups:

* an open group whose record has not changed for ``EGROUP_IDLE_S`` is sealed (its
  writer went quiet or died; the next write there is refused and goes to a new group);
* a sealed group with no live extent has its replica files deleted, then is dropped
  from metadata (a replica on a DOWN node keeps its file until that node comes back and
  sweeps it: ``sweep_orphans``);
* a sealed group more dead than live (overwritten and deleted extents) is compacted: its
  live extents are copied into a new group on healthy domains and moved there by one
  ``RelocateExtents`` (a move applies only if the extent still lives where it was read),
  after which the old group is empty and collected on the next pass.

Only the leader scans, so two scanners never race; a new leader starts over from the
replicated metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fabric import limits
from fabric.errors import FabricError
from fabric.metadata.datapath import DropEgroup, Move, RelocateExtents, SealEgroups
from fabric.ports import Clock, DiskFault, PeerUnreachable
from fabric.wire.messages import DeleteEgroupFiles
from nodes.services.ec import EcService
from nodes.services.gateway import Gateway
from nodes.services.images import ImageService
from nodes.services.metadata import MetadataService
from nodes.services.quiet import QuietClock
from nodes.services.storage import StorageService

log = logging.getLogger(__name__)

SCAN_EVERY_S = 1.0
EGROUP_IDLE_S = 5.0
COMPACT_MIN_DEAD_BYTES = 1 * limits.MiB


@dataclass
class ScanStats:
    sealed: int = 0
    dropped: int = 0
    compacted: int = 0
    extents_moved: int = 0
    bytes_reclaimed: int = 0


class Scanner:
    def __init__(
        self, node_id: str, clock: Clock, metadata: MetadataService, gateway: Gateway
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.metadata = metadata
        self.gateway = gateway
        self.stats = ScanStats()
        self.ec: EcService | None = None
        self.images: ImageService | None = None
        self._quiet = QuietClock()
        """egid -> (record version, when first seen at that version)."""

    async def run_forever(self) -> None:
        while True:
            await self.clock.sleep(SCAN_EVERY_S)
            if not self.metadata.is_leader:
                self._quiet.clear()
                continue
            try:
                await self.scan_once()
            except (FabricError, PeerUnreachable, DiskFault) as exc:
                # An operating fault (a node died mid-compaction, say): the next pass
                # starts over from the metadata. A bug still propagates and is logged.
                log.warning("scan interrupted: %s", exc)

    async def scan_once(self) -> None:
        now = self.clock.now()
        idle: list[str] = []
        groups = list(self.metadata.state.scan("egroup/"))
        self._quiet.keep_only(item.value["egid"] for _, item in groups if not item.value["sealed"])
        for _, item in groups:
            eg = item.value
            if eg.get("parity"):
                continue  # parity lives and dies with its strip
            if not eg["sealed"]:
                if self._quiet.quiet_for(eg["egid"], item.version, now) >= EGROUP_IDLE_S:
                    idle.append(eg["egid"])
            elif eg["extents"] == 0 and not eg.get("strip"):
                await self._collect(eg)
            elif eg["dead_bytes"] > eg["live_bytes"] and eg["dead_bytes"] >= COMPACT_MIN_DEAD_BYTES:
                await self._compact(eg)
        if idle:
            result = await self.metadata.propose(SealEgroups(tuple(idle)))
            if result.ok:
                self.stats.sealed += len(idle)
        if self.ec is not None:
            await self.ec.scan()
        if self.images is not None:
            await self.images.fail_orphans()

    async def _collect(self, eg: dict[str, Any]) -> None:
        nodes = self.metadata.state.nodes()
        for node in eg["replicas"]:
            try:
                await self.gateway.call_storage(node, DeleteEgroupFiles(eg["egid"]))
            except (PeerUnreachable, FabricError) as exc:
                if nodes.get(node, {}).get("state") != "DOWN":
                    log.info("collect %s later: %s", eg["egid"], exc)
                    return  # try again next pass, once the replica answers
        result = await self.metadata.propose(DropEgroup(eg["egid"]))
        if result.ok:
            self.stats.dropped += 1
            self.stats.bytes_reclaimed += (eg["live_bytes"] + eg["dead_bytes"]) * len(
                eg["replicas"]
            )
            log.info("collected extent group %s", eg["egid"])

    async def _compact(self, eg: dict[str, Any]) -> None:
        container = eg["container"]
        live = self.metadata.state.extents_in(container, eg["egid"])
        if not live:
            return
        payloads = [await self.gateway.read_stored(ext) for _, ext in live]
        rf = self.gateway.policy(container).rf  # an EC'd group has one copy; its data gets rf
        target = self.gateway.place_egroup(container, rf, set())
        offsets = await self.gateway.append_replicas(target, payloads)
        moves = tuple(
            Move(container, extent_id, eg["egid"], off, len(data))
            for (extent_id, _), off, data in zip(live, offsets, payloads, strict=True)
        )
        result = await self.metadata.propose(RelocateExtents(target, moves))
        if result.ok:
            self.stats.compacted += 1
            self.stats.extents_moved += int(result.value)
            log.info("compacted %s into %s (%d extents)", eg["egid"], target.egid, result.value)


async def sweep_orphans(metadata: MetadataService, storage: StorageService) -> int:
    """Delete local replicas the cluster dropped or moved while this node was away."""
    await metadata.read_index()
    swept = 0
    for egid in storage.egroups():
        record = metadata.state.get(f"egroup/{egid}")
        dropped = metadata.state.get(f"egroup-dropped/{egid}") is not None
        # A sealed group that no longer lists this node (EC kept another copy, or a
        # member moved while we were away) has no use for our file either.
        surplus = (
            record is not None
            and record.value["sealed"]
            and (metadata.node_id not in record.value["replicas"])
        )
        if dropped or surplus:
            await storage.delete(DeleteEgroupFiles(egid))
            swept += 1
    return swept
