"""Calls to the extent-group replicas on any node (this one included), and file claims.

A call to this node goes straight to its ``StorageService``; any other goes over the
transport with a timeout that depends on the call (a read that is slow is skipped for
another copy sooner than an append is given up). New files are claimed in metadata
(``RegisterIntents``) before their first byte, so a writer that dies leaves nothing
the scanner cannot find.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from fabric import limits
from fabric.errors import FabricError, InsufficientStorage, Unavailable, from_code
from fabric.extents import codec
from fabric.metadata.commands import NewEgroup, RegisterIntents
from fabric.metadata.records import EgroupIntent, StripMember
from fabric.ports import PeerUnreachable, Transport
from fabric.wire.messages import (
    AppendExtents,
    AppendReply,
    DeleteEgroupFiles,
    ExtentData,
    ReadExtent,
)
from nodes.services.metadata import MetadataService
from nodes.services.storage import StorageService


class ReplicaFull(PeerUnreachable):
    """A replica refused an append: its disks are full (the writer places elsewhere, and
    answers 507 when no fault domain has room)."""


class ReplicaClient:
    def __init__(
        self,
        node_id: str,
        transport: Transport,
        storage: StorageService,
        metadata: MetadataService,
    ) -> None:
        self.node_id = node_id
        self.transport = transport
        self.storage = storage
        self.metadata = metadata

    async def claim(self, eg: NewEgroup) -> None:
        """Claim a new group's files before its first byte (data without metadata is
        then either committed or collected, never left behind)."""
        await self.claim_many([eg])

    async def claim_many(self, egroups: Iterable[NewEgroup]) -> None:
        """Claim the files of several new groups in one commit."""
        await self.claim_files(
            *(
                EgroupIntent(
                    eg.egid,
                    eg.container,
                    tuple(StripMember(eg.egid, node) for node in eg.replicas),
                    self.node_id,
                )
                for eg in egroups
            )
        )

    async def claim_files(self, *intents: EgroupIntent) -> None:
        result = await self.metadata.propose(RegisterIntents(intents))
        if not result.ok:
            raise from_code(result.code, result.message)

    async def append_replicas(
        self, eg: NewEgroup, payloads: list[bytes], at: int = -1
    ) -> list[int]:
        """Append at offset ``at`` (reserved by the caller) on every replica, durably."""
        msg = AppendExtents(eg.egid, tuple(payloads), at)
        replies = await asyncio.gather(
            *(self.call_storage(node, msg) for node in eg.replicas), return_exceptions=True
        )
        offsets: list[tuple[int, ...]] = []
        for node, reply in zip(eg.replicas, replies, strict=True):
            if isinstance(reply, BaseException):
                if isinstance(reply, InsufficientStorage):
                    raise ReplicaFull(node, str(reply))
                if isinstance(reply, PeerUnreachable | FabricError):
                    raise PeerUnreachable(node, str(reply))
                raise reply
            assert isinstance(reply, AppendReply)
            offsets.append(reply.offsets)
        if any(o != offsets[0] for o in offsets):
            raise Unavailable(f"replicas of {eg.egid} disagree on offsets")
        return list(offsets[0])

    async def good_copy(
        self, egid: str, offset: int, length: int, checksum: int, nodes: Iterable[str]
    ) -> tuple[bytes, str, list[str]]:
        """The stored bytes ``[offset, offset + length)`` of ``egid`` from the first of
        ``nodes`` whose copy passes ``checksum``: (bytes, that node, what the others said).
        Raises ``Unavailable`` naming each node's problem when none has a good copy."""
        problems: list[str] = []
        for node in nodes:
            try:
                reply = await self.call_storage(node, ReadExtent(egid, offset, length))
            except (PeerUnreachable, FabricError) as exc:
                problems.append(f"{node}: {exc}")
                continue
            assert isinstance(reply, ExtentData)
            if len(reply.data) == length and codec.checksum(reply.data) == checksum:
                return reply.data, node, problems
            problems.append(f"{node}: bad copy")
        raise Unavailable(
            f"no good copy of {egid} at {offset}+{length}: " + ("; ".join(problems) or "no copy")
        )

    async def call_storage(self, node: str, msg: Any) -> Any:
        if node == self.node_id:
            return await self.storage.handle(msg)
        timeout = limits.READ_TIMEOUT_S if isinstance(msg, ReadExtent) else limits.REPLICA_TIMEOUT_S
        return await self.transport.call(node, msg, timeout)

    async def delete_files(self, files: Iterable[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """Delete each ``(egid, node)`` group file; return ``(egid, node, why)`` of those
        that could not be deleted now (the node did not answer or refused)."""
        failed = []
        for egid, node in files:
            try:
                await self.call_storage(node, DeleteEgroupFiles(egid))
            except (PeerUnreachable, FabricError) as exc:
                failed.append((egid, node, str(exc)))
        return failed
