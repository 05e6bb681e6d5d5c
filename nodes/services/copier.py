"""The target's half of a rebuild: pull a copy of an extent group from its survivors.

The leader's rebuild planner (``nodes.services.rebuild``) picks a node for a lost copy
and sends it ``PullEgroup``; that node reads the group's file from a surviving replica
a window at a time (``limits.REBUILD_WINDOWS_IN_FLIGHT`` windows on their way), so the
work of a rebuild spreads over every node that holds or receives a copy. Windows are
cut at extent boundaries, so every live extent is checked whole against its checksum
before it is written: a bad range is read again from another source, and a copy no
source can give good bytes for is refused (rebuilding must not spread corruption). The
file is written without syncing and fsynced once at the end; only then is the copy
reported, and only after that does the leader commit it (``AddReplica``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from dataclasses import dataclass, field

from fabric import limits
from fabric.buggify import OFF as buggify_off
from fabric.buggify import Buggify
from fabric.errors import FabricError, Unavailable
from fabric.extents import codec
from fabric.ports import PeerUnreachable
from fabric.wire.messages import (
    AppendExtents,
    DeleteEgroupFiles,
    EgroupStat,
    ExtentCheck,
    ExtentData,
    PullEgroup,
    PullReply,
    ReadExtent,
    StatEgroup,
)
from nodes.services.replicas import ReplicaClient
from nodes.services.storage import StorageService

log = logging.getLogger(__name__)


@dataclass
class CopyStats:
    copies: int = 0
    bytes_copied: int = 0
    bad_ranges: int = 0
    failed: int = 0
    bytes_from: Counter[str] = field(default_factory=Counter)
    """Bytes read from each source node for copies made here: with the nodes' racks,
    whether repair traffic stayed inside a rack or crossed one."""


def windows(size: int, checks: tuple[ExtentCheck, ...], window: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges covering ``[0, size)``, each about ``window`` bytes, cut
    only where no extent spans the cut (an extent larger than a window is one window)."""
    cuts = [0]
    covered = 0
    for c in sorted(checks, key=lambda c: c.offset):
        if c.offset >= covered and c.offset - cuts[-1] >= window:
            cuts.append(c.offset)
        covered = max(covered, c.offset + c.length)
    while size - cuts[-1] > window and cuts[-1] + window >= covered:
        cuts.append(cuts[-1] + window)
    ends = [*cuts[1:], max(size, covered)]
    return [(a, b) for a, b in zip(cuts, ends, strict=True) if b > a]


class Copier:
    def __init__(
        self,
        node_id: str,
        storage: StorageService,
        replicas: ReplicaClient,
        buggify: Buggify = buggify_off,
    ) -> None:
        self.node_id = node_id
        self.buggify = buggify
        self.storage = storage
        self.replicas = replicas
        self.stats = CopyStats()

    async def pull(self, msg: PullEgroup) -> PullReply:
        if not msg.sources:
            raise Unavailable(f"no source given for {msg.egid}")
        # A partial copy an earlier attempt left here is garbage: start from nothing.
        await self.storage.delete(DeleteEgroupFiles(msg.egid))
        try:
            reply = await self._copy(msg)
        except BaseException:
            self.stats.failed += 1
            await self.storage.delete(DeleteEgroupFiles(msg.egid))
            raise
        self.stats.copies += 1
        self.stats.bytes_copied += reply.bytes_copied
        self.stats.bad_ranges += reply.bad_ranges
        return reply

    async def _copy(self, msg: PullEgroup) -> PullReply:
        # Up to the end of the last live extent: bytes past it are dead or were never
        # committed (no need to ask the source for its file's size).
        size = max((c.offset + c.length for c in msg.checks), default=0)
        if not size:
            size = await self._size(msg)
        plan = windows(size, msg.checks, limits.REBUILD_WINDOW_BYTES)
        checks = sorted(msg.checks, key=lambda c: c.offset)
        loop = asyncio.get_running_loop()
        pending: deque[tuple[int, int, asyncio.Task[tuple[bytes, int]]]] = deque()
        bad = 0
        try:
            for start, end in plan:
                pending.append(
                    (start, end, loop.create_task(self._window(msg, checks, start, end)))
                )
                if len(pending) >= limits.REBUILD_WINDOWS_IN_FLIGHT:
                    bad += await self._write(msg.egid, pending.popleft())
            while pending:
                bad += await self._write(msg.egid, pending.popleft())
        finally:
            for _, _, task in pending:
                task.cancel()
        copied = await self.storage.flush(msg.egid) if plan else 0
        return PullReply(copied, bad)

    async def _write(
        self, egid: str, item: tuple[int, int, asyncio.Task[tuple[bytes, int]]]
    ) -> int:
        start, _, task = item
        data, bad = await task
        await self.storage.append(AppendExtents(egid, (data,), start), durable=False)
        return bad

    async def _size(self, msg: PullEgroup) -> int:
        errors = []
        for source in msg.sources:
            try:
                reply = await self.replicas.call_storage(source, StatEgroup(msg.egid))
            except (PeerUnreachable, FabricError) as exc:
                errors.append(f"{source}: {exc}")
                continue
            assert isinstance(reply, EgroupStat)
            return reply.size
        raise Unavailable(f"no source of {msg.egid} answered: {'; '.join(errors)}")

    async def _read(self, egid: str, source: str, offset: int, length: int) -> bytes:
        if self.buggify.fires("rebuild.pull-fails"):
            raise PeerUnreachable(source, "BUGGIFY: the pull broke off")
        reply = await self.replicas.call_storage(source, ReadExtent(egid, offset, length))
        assert isinstance(reply, ExtentData)
        if len(reply.data) != length:
            raise Unavailable(f"{source}: {egid} is short at {offset}+{length}")
        return reply.data

    async def _window(
        self, msg: PullEgroup, checks: list[ExtentCheck], start: int, end: int
    ) -> tuple[bytes, int]:
        """Bytes ``[start, end)`` of the group, every live extent in them checked; and
        how many extents had to come from another source."""
        data = None
        errors = []
        for source in msg.sources:
            try:
                data = await self._read(msg.egid, source, start, end - start)
                self.stats.bytes_from[source] += len(data)
                break
            except (PeerUnreachable, FabricError) as exc:
                errors.append(f"{source}: {exc}")
        if data is None:
            raise Unavailable(f"no source could read {msg.egid} at {start}: {'; '.join(errors)}")
        mended = bytearray()
        bad = 0
        for c in checks:
            if c.offset < start or c.offset >= end:
                continue
            at = c.offset - start
            if codec.checksum(data[at : at + c.length]) == c.checksum:
                continue
            bad += 1
            good = await self._good_copy(msg, c)
            if not mended:
                mended = bytearray(data)
            mended[at : at + c.length] = good
        return (bytes(mended) if mended else data), bad

    async def _good_copy(self, msg: PullEgroup, c: ExtentCheck) -> bytes:
        try:
            good, source, _ = await self.replicas.good_copy(
                msg.egid, c.offset, c.length, c.checksum, msg.sources
            )
            self.stats.bytes_from[source] += len(good)
        except Unavailable:
            raise Unavailable(
                f"no source holds a good copy of the extent at {c.offset} of {msg.egid}"
            ) from None
        log.warning(
            "%s: bad copy of %s at %d; read it from %s", self.node_id, msg.egid, c.offset, source
        )
        return good
