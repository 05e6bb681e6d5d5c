"""The storage service: this node's replicas of extent groups, one file each on a disk.

An extent group replica is an append-only file ``<egid>.eg`` on one of the node's disks.
Its owner (the write coordinator that writes the group) appends batches of stored extents to
every replica in the same order, so offsets agree across replicas; each batch is one
append and one fsync (group commit). The node knows nothing of extents: metadata says
which bytes at which offset are which extent and what their checksum is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import xxhash

from fabric.errors import BadRequest, NotFound, Unavailable
from fabric.ports import Disk, DiskFault
from fabric.wire.messages import (
    Ack,
    AppendExtents,
    AppendReply,
    DeleteEgroupFiles,
    EgroupList,
    EgroupStat,
    ExtentData,
    ListEgroups,
    ReadExtent,
    RepairExtent,
    StatEgroup,
)

log = logging.getLogger(__name__)

SUFFIX = ".eg"


def egroup_file(egid: str) -> str:
    return egid + SUFFIX


class StorageService:
    def __init__(self, node_id: str, disks: list[Disk]) -> None:
        self.node_id = node_id
        self.disks = disks
        self._where: dict[str, Disk] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.bytes_written = 0
        self.bytes_read = 0
        self.repairs = 0

    async def open(self) -> None:
        """Find the extent group replicas already on this node's disks."""
        for disk in self.disks:
            try:
                names = await disk.listdir()
            except DiskFault as exc:
                log.error("disk %s unreadable at start: %s", disk.name, exc)
                continue
            for name in names:
                if name.endswith(SUFFIX):
                    self._where[name[: -len(SUFFIX)]] = disk

    def egroups(self) -> list[str]:
        return sorted(self._where)

    def list(self) -> EgroupList:
        return EgroupList(tuple(self.egroups()))

    def _disk_for_new(self, egid: str) -> Disk:
        # Spread groups over disks by hash: stable, and balanced without statting files.
        return min(self.disks, key=lambda d: xxhash.xxh3_64_intdigest(f"{egid}/{d.name}".encode()))

    async def handle(self, msg: Any) -> Any:
        """Serve one call to this node's replicas (from a peer, or from this node)."""
        match msg:
            case AppendExtents():
                return await self.append(msg)
            case ReadExtent():
                return await self.read(msg)
            case RepairExtent():
                return await self.repair(msg)
            case DeleteEgroupFiles():
                return await self.delete(msg)
            case StatEgroup():
                return await self.stat(msg)
            case ListEgroups():
                return self.list()
        raise BadRequest(f"not a storage message: {type(msg).__name__}")

    async def append(self, msg: AppendExtents) -> AppendReply:
        lock = self._locks.setdefault(msg.egid, asyncio.Lock())
        async with lock:
            disk = self._where.get(msg.egid) or self._disk_for_new(msg.egid)
            path = egroup_file(msg.egid)
            try:
                start = await disk.append(path, b"".join(msg.payloads))
                await disk.sync(path)
            except DiskFault as exc:
                raise Unavailable(f"{self.node_id}: {exc}") from None
            self._where[msg.egid] = disk
        offsets = []
        pos = start
        for payload in msg.payloads:
            offsets.append(pos)
            pos += len(payload)
        self.bytes_written += pos - start
        return AppendReply(tuple(offsets))

    async def read(self, msg: ReadExtent) -> ExtentData:
        disk = self._where.get(msg.egid)
        if disk is None:
            raise NotFound(f"{self.node_id} holds no extent group {msg.egid}")
        try:
            data = await disk.pread(egroup_file(msg.egid), msg.offset, msg.length)
        except DiskFault as exc:
            raise Unavailable(f"{self.node_id}: {exc}") from None
        self.bytes_read += len(data)
        return ExtentData(data)

    async def stat(self, msg: StatEgroup) -> EgroupStat:
        disk = self._where.get(msg.egid)
        if disk is None:
            raise NotFound(f"{self.node_id} holds no extent group {msg.egid}")
        try:
            size = await disk.size(egroup_file(msg.egid))
        except DiskFault as exc:
            raise Unavailable(f"{self.node_id}: {exc}") from None
        return EgroupStat(size or 0)

    async def repair(self, msg: RepairExtent) -> Ack:
        disk = self._where.get(msg.egid)
        if disk is None:
            raise NotFound(f"{self.node_id} holds no extent group {msg.egid}")
        try:
            await disk.write_at(egroup_file(msg.egid), msg.offset, msg.data)
        except DiskFault as exc:
            raise Unavailable(f"{self.node_id}: {exc}") from None
        self.repairs += 1
        log.info("repaired %d bytes at %d of extent group %s", len(msg.data), msg.offset, msg.egid)
        return Ack()

    async def delete(self, msg: DeleteEgroupFiles) -> Ack:
        disk = self._where.pop(msg.egid, None)
        self._locks.pop(msg.egid, None)
        if disk is not None:
            await disk.delete(egroup_file(msg.egid))
        return Ack()
