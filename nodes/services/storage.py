"""The storage service: this node's replicas of extent groups, one file each on a disk.

An extent group replica is an append-only file ``<egid>.eg`` on one of the node's disks.
Its owner (the write coordinator that writes the group) reserves each batch's range and
sends the batch to every replica with its offset, so offsets agree across replicas and
several batches can be in flight at once: a batch that arrives early waits (bounded)
for the bytes before it. A batch is answered once every byte up to its end is fsynced;
fsyncs are shared (group commit: one runs at a time per file and covers all that was
written before it started). After a failed write or fsync the replica refuses further
appends, since bytes before them may be lost. The node knows nothing of extents:
metadata says which bytes at which offset are which extent and what their checksum is.

A group's id names its file, so every call parses it first (``fabric.ids.egid``): a
peer's message was checked when it was decoded, and this service checks again whatever
the caller, before any state or file is touched. A bad id or range is a ``BadRequest``,
never a disk fault: a forged call must not get a healthy disk marked FAILED.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from dataclasses import dataclass, field
from typing import Any

import xxhash

from fabric import ids, limits
from fabric.errors import BadRequest, Conflict, InsufficientStorage, NotFound, Unavailable
from fabric.ports import Disk, DiskFault, DiskFull
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
    """The file of group ``egid``; ``BadId`` unless ``egid`` is an extent-group id."""
    return ids.egid(egid) + SUFFIX


def _check_range(offset: int, length: int) -> None:
    if not 0 <= offset <= limits.MAX_EGROUP_FILE_BYTES or not length >= 0:
        raise BadRequest(f"range {offset}+{length} outside an extent-group file")


@dataclass
class Tail:
    """The end of one replica file as appends see it."""

    lock: asyncio.Condition = field(default_factory=asyncio.Condition)
    end: int = -1
    """Bytes written (-1 until read from the disk)."""
    synced: int = 0
    syncing: asyncio.Event | None = None
    broken: str = ""


class StorageService:
    def __init__(self, node_id: str, disks: list[Disk]) -> None:
        self.node_id = node_id
        self.disks = disks
        self._where: dict[str, Disk] = {}
        self._tails: dict[str, Tail] = {}
        self.bytes_written = dict.fromkeys((d.name for d in disks), 0)
        """disk -> bytes appended to its extent groups (``/metrics``, per disk)."""
        self.bytes_read = dict.fromkeys((d.name for d in disks), 0)
        self.repairs = 0
        self.disk_state: dict[str, str] = {d.name: "UP" for d in disks}
        """UP, FULL (takes no new group) or FAILED (holds nothing): kept by ``DiskWatch``."""
        self.faults: dict[str, str] = {}
        """disk -> the first I/O error seen on it, for ``DiskWatch`` to act on."""
        self.fault_seen = asyncio.Event()

    async def open(self) -> None:
        """Find the extent group replicas already on this node's disks."""
        for disk in self.disks:
            try:
                names = await disk.listdir()
            except DiskFault as exc:
                log.error("disk %s unreadable at start: %s", disk.name, exc)
                self._fault(disk, exc)
                continue
            for name in names:
                egid = name[: -len(SUFFIX)]
                if not name.endswith(SUFFIX):
                    continue
                if not ids.EGID.match(egid):
                    log.warning("disk %s: ignoring %r, not an extent group's file", disk.name, name)
                    continue
                self._where.setdefault(egid, disk)

    def egroups(self) -> list[str]:
        return sorted(self._where)

    def list(self) -> EgroupList:
        return EgroupList(tuple(self.egroups()))

    def _disk_for_new(self, egid: str) -> Disk:
        # Spread groups over the disks with room by hash: stable, and balanced without
        # statting files.
        usable = [d for d in self.disks if self.disk_state.get(d.name) == "UP"]
        if not usable:
            states = ", ".join(f"{d.name} {self.disk_state.get(d.name)}" for d in self.disks)
            raise InsufficientStorage(f"{self.node_id} has no disk with room ({states})")
        return min(usable, key=lambda d: xxhash.xxh3_64_intdigest(f"{egid}/{d.name}".encode()))

    def _fault(self, disk: Disk, exc: DiskFault) -> None:
        """An I/O error on ``disk``: ``DiskWatch`` marks it FAILED. A full disk is not
        failed: it takes no new group from now on (``DiskWatch`` tells the cluster)."""
        if isinstance(exc, DiskFull):
            if self.disk_state.get(disk.name) == "UP":
                self.disk_state[disk.name] = "FULL"
                self.fault_seen.set()
        elif disk.name not in self.faults:
            self.faults[disk.name] = str(exc)
            self.fault_seen.set()

    def groups_on(self, disk_name: str) -> builtins.list[str]:
        return sorted(egid for egid, d in self._where.items() if d.name == disk_name)

    def forget_disk(self, disk_name: str) -> builtins.list[str]:
        """Stop using a failed disk: its groups are no longer held here (returned)."""
        lost = self.groups_on(disk_name)
        for egid in lost:
            del self._where[egid]
            tail = self._tails.pop(egid, None)
            if tail is not None:
                tail.broken = f"disk {disk_name} failed"
        return lost

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

    async def append(self, msg: AppendExtents, durable: bool = True) -> AppendReply:
        """Write ``msg.payloads`` at ``msg.at``; with ``durable``, answer once fsynced
        (a copy being rebuilt writes all its windows first, then ``flush``es once)."""
        path = egroup_file(msg.egid)
        if msg.at < -1:
            raise BadRequest(f"append at {msg.at}")
        tail = self._tails.setdefault(msg.egid, Tail())
        disk = self._where.get(msg.egid) or self._disk_for_new(msg.egid)
        size = sum(map(len, msg.payloads))
        async with tail.lock:
            if tail.end < 0:
                tail.end = tail.synced = await self._size(disk, path)
            if msg.at >= 0 and tail.end < msg.at and not tail.broken:
                try:
                    await asyncio.wait_for(
                        tail.lock.wait_for(lambda: tail.end >= msg.at or bool(tail.broken)),
                        limits.APPEND_ORDER_WAIT_S,
                    )
                except TimeoutError:
                    raise Unavailable(
                        f"{self.node_id}: the bytes before offset {msg.at} of {msg.egid} "
                        f"did not come within {limits.APPEND_ORDER_WAIT_S:g} s"
                    ) from None
            if tail.broken:
                raise Unavailable(f"{self.node_id}: extent group {msg.egid}: {tail.broken}")
            start = tail.end if msg.at < 0 else msg.at
            if start != tail.end:
                raise Conflict(f"{self.node_id}: offset {msg.at} of {msg.egid} is taken")
            try:
                landed = await disk.append_parts(path, msg.payloads)
            except DiskFault as exc:
                self._break(tail, str(exc))
                self._fault(disk, exc)
                if isinstance(exc, DiskFull):
                    raise InsufficientStorage(f"{self.node_id}: {exc}") from None
                raise Unavailable(f"{self.node_id}: {exc}") from None
            self._where[msg.egid] = disk
            if landed != start:
                self._break(tail, f"append landed at {landed}, not {start}")
                raise Unavailable(f"{self.node_id}: extent group {msg.egid}: {tail.broken}")
            tail.end = landed + size
            tail.lock.notify_all()
        if durable:
            await self._sync(tail, disk, path, start + size)
        offsets = []
        pos = start
        for payload in msg.payloads:
            offsets.append(pos)
            pos += len(payload)
        self.bytes_written[disk.name] += size
        return AppendReply(tuple(offsets))

    async def flush(self, egid: str) -> int:
        """Make every byte written to ``egid`` durable; its size."""
        path = egroup_file(egid)
        disk, tail = self._where.get(egid), self._tails.get(egid)
        if disk is None or tail is None:
            raise NotFound(f"{self.node_id} holds no extent group {egid}")
        await self._sync(tail, disk, path, tail.end)
        return tail.end

    async def _size(self, disk: Disk, path: str) -> int:
        try:
            return await disk.size(path) or 0
        except DiskFault as exc:
            self._fault(disk, exc)
            raise Unavailable(f"{self.node_id}: {exc}") from None

    async def _sync(self, tail: Tail, disk: Disk, path: str, end: int) -> None:
        """Return once bytes ``[0, end)`` are durable: one fsync at a time, each covering
        everything written before it began (concurrent batches share it)."""
        while tail.synced < end:
            if tail.broken:
                raise Unavailable(f"{self.node_id}: {path}: {tail.broken}")
            if tail.syncing is not None:
                await tail.syncing.wait()
                continue
            target, tail.syncing = tail.end, asyncio.Event()
            try:
                await disk.sync(path)
                tail.synced = max(tail.synced, target)
            except DiskFault as exc:
                async with tail.lock:
                    self._break(tail, str(exc))
                self._fault(disk, exc)
                raise Unavailable(f"{self.node_id}: {exc}") from None
            finally:
                tail.syncing.set()
                tail.syncing = None

    @staticmethod
    def _break(tail: Tail, why: str) -> None:
        """Refuse the group's further appends (the caller holds ``tail.lock``): bytes
        before them may be lost, so they must not be answered as durable."""
        tail.broken = why or "a write failed"
        tail.lock.notify_all()

    async def read(self, msg: ReadExtent) -> ExtentData:
        path = egroup_file(msg.egid)
        _check_range(msg.offset, msg.length)
        disk = self._where.get(msg.egid)
        if disk is None:
            raise NotFound(f"{self.node_id} holds no extent group {msg.egid}")
        try:
            data = await disk.pread(path, msg.offset, msg.length)
        except DiskFault as exc:
            self._fault(disk, exc)
            raise Unavailable(f"{self.node_id}: {exc}") from None
        self.bytes_read[disk.name] += len(data)
        return ExtentData(data)

    async def stat(self, msg: StatEgroup) -> EgroupStat:
        path = egroup_file(msg.egid)
        disk = self._where.get(msg.egid)
        if disk is None:
            raise NotFound(f"{self.node_id} holds no extent group {msg.egid}")
        try:
            size = await disk.size(path)
        except DiskFault as exc:
            self._fault(disk, exc)
            raise Unavailable(f"{self.node_id}: {exc}") from None
        return EgroupStat(size or 0)

    async def repair(self, msg: RepairExtent) -> Ack:
        path = egroup_file(msg.egid)
        _check_range(msg.offset, len(msg.data))
        disk = self._where.get(msg.egid)
        if disk is None:
            raise NotFound(f"{self.node_id} holds no extent group {msg.egid}")
        try:
            await disk.write_at(path, msg.offset, msg.data)
        except DiskFault as exc:
            self._fault(disk, exc)
            raise Unavailable(f"{self.node_id}: {exc}") from None
        self.repairs += 1
        log.info("repaired %d bytes at %d of extent group %s", len(msg.data), msg.offset, msg.egid)
        return Ack()

    async def delete(self, msg: DeleteEgroupFiles) -> Ack:
        path = egroup_file(msg.egid)
        disk = self._where.pop(msg.egid, None)
        tail = self._tails.pop(msg.egid, None)
        if tail is not None:
            async with tail.lock:
                self._break(tail, "deleted")
        if disk is not None:
            try:
                await disk.delete(path)
            except DiskFault as exc:
                self._fault(disk, exc)
                raise Unavailable(f"{self.node_id}: {exc}") from None
        return Ack()
