"""A node: the services of one fabric member, wired to whatever runtime it is given.

The same ``Node`` runs as a real process (``nodes.main`` with ``nodes.runtime``) and
inside the simulator (``nodes.simcluster`` with ``fabric.sim``); it never knows which.
It owns every task it starts, so ``stop()`` (a clean shutdown) and the simulator's
crash both end all of them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any

from fabric.config import ClusterConfig
from fabric.consensus.types import (
    AppendRequest,
    AppendResponse,
    SnapshotRequest,
    VoteRequest,
    VoteResponse,
)
from fabric.errors import BadRequest, FabricError
from fabric.images.base import MemorySpill, ReaderLimits, Spill
from fabric.metadata.commands import RegisterNode
from fabric.ports import Clock, Disk, DiskFault, PeerUnreachable, Transport
from fabric.wire.messages import (
    AppendExtents,
    ClusterViewReply,
    ClusterViewRequest,
    DeleteEgroupFiles,
    ListEgroups,
    NodeReport,
    ProposeRequest,
    ReadExtent,
    ReadIndexRequest,
    RepairExtent,
    StatEgroup,
)
from nodes.services.accounting import cluster_usage, container_views
from nodes.services.ec import EcService
from nodes.services.gateway import Gateway, Offload
from nodes.services.health import HealthService
from nodes.services.images import ImageService
from nodes.services.metadata import MetadataService, RaftObserver
from nodes.services.scanner import Scanner, sweep_orphans
from nodes.services.storage import StorageService

log = logging.getLogger(__name__)

VIEW_TIMEOUT_S = 3.0


async def _inline(fn: Any, *args: Any) -> Any:
    return fn(*args)


class Node:
    def __init__(
        self,
        config: ClusterConfig,
        node_id: str,
        clock: Clock,
        rng: random.Random,
        transport: Transport,
        disks: list[Disk],
        observer: RaftObserver | None = None,
        snapshot_every_entries: int | None = None,
        offload: Offload | None = None,
        spill_factory: Callable[[], Spill] | None = None,
        reader_limits: ReaderLimits | None = None,
    ) -> None:
        self.config = config
        self.node_config = config.node(node_id)
        self.id = node_id
        self.clock = clock
        self.rng = rng
        self.transport = transport
        self.disks = disks
        self._tasks: set[asyncio.Task[Any]] = set()
        extra = (
            {}
            if snapshot_every_entries is None
            else {"snapshot_every_entries": snapshot_every_entries}
        )
        self.metadata = MetadataService(
            node_id, config, clock, rng, transport, disks[0], observer, **extra
        )
        self.health = HealthService(
            node_id, config, clock, transport, self.metadata, self._local_report
        )
        self.storage = StorageService(node_id, disks)
        self.gateway = Gateway(
            node_id, config, clock, rng, transport, self.metadata, self.storage, offload or _inline
        )
        self.ec = EcService(node_id, clock, rng, self.metadata, self.gateway)
        self.gateway.ec = self.ec
        self.images = ImageService(
            node_id,
            clock,
            rng,
            self.metadata,
            self.gateway,
            offload or _inline,
            spill_factory or MemorySpill,
            reader_limits or ReaderLimits(),
        )
        self.scanner = Scanner(node_id, clock, self.metadata, self.gateway, self.ec, self.images)
        self.registered = False

    # --- lifecycle --------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def start(self) -> None:
        """Open durable state (raises CorruptLog) and start every service."""
        await self.metadata.open()
        await self.storage.open()
        self.transport.serve(self._on_call, self._on_message)
        self.spawn(self.metadata.run(), "raft-driver")
        self.spawn(self.metadata.tick_forever(), "raft-ticker")
        self.spawn(self.health.report_forever(), "health-report")
        self.spawn(self.health.monitor_forever(), "health-monitor")
        self.spawn(self._register(), "register")
        self.spawn(self.scanner.run_forever(), "scanner")

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def kill(self) -> None:
        """Simulated crash: cancel everything at once, no cleanup."""
        for task in list(self._tasks):
            task.cancel()

    async def _register(self) -> None:
        cmd = RegisterNode(
            self.id,
            self.node_config.address,
            self.node_config.disks,
            dict(self.node_config.labels),
        )
        while True:
            try:
                result = await self.metadata.propose(cmd)
            except FabricError as exc:
                log.info("registration not committed yet: %s", exc)
                continue
            if result.ok:
                self.registered = True
                log.info("registered in the cluster metadata at index %s", result.value)
                swept = await sweep_orphans(self.metadata, self.storage)
                if swept:
                    log.info("deleted %d extent group replicas dropped while away", swept)
                return

    async def _local_report(self) -> tuple[str, dict[str, Any]]:
        """UP, or DEGRADED with a reason when a disk cannot be used."""
        disks: list[dict[str, Any]] = []
        failed: list[str] = []
        for disk in self.disks:
            try:
                used, capacity = await disk.usage()
                disks.append(
                    {
                        "name": disk.name,
                        "used_bytes": used,
                        "capacity_bytes": capacity,
                        "state": "UP",
                    }
                )
            except DiskFault as exc:
                failed.append(disk.name)
                disks.append({"name": disk.name, "state": "FAILED", "error": str(exc)})
        if failed:
            return "DEGRADED", {"disks": disks, "reason": f"disk failed: {', '.join(failed)}"}
        return "UP", {"disks": disks}

    # --- incoming traffic -------------------------------------------------------------------
    def _on_message(self, frm: str, message: Any) -> None:
        match message:
            case (
                VoteRequest()
                | VoteResponse()
                | AppendRequest()
                | AppendResponse()
                | (SnapshotRequest())
            ):
                self.metadata.step(message)
            case _:
                log.warning(
                    "dropped unexpected one-way message %s from %s", type(message).__name__, frm
                )

    async def _on_call(self, frm: str, message: Any) -> Any:
        match message:
            case ProposeRequest():
                return await self.metadata.serve_forwarded(message)
            case ReadIndexRequest():
                return await self.metadata.serve_read_index()
            case NodeReport():
                return self.health.receive(message)
            case ClusterViewRequest():
                return ClusterViewReply(await self._leader_view())
            case (
                AppendExtents()
                | ReadExtent()
                | RepairExtent()
                | DeleteEgroupFiles()
                | StatEgroup()
                | ListEgroups()
            ):
                return await self.gateway.dispatch_storage(message)
        raise BadRequest(f"unexpected call {type(message).__name__} from {frm}")

    # --- the cluster as users see it --------------------------------------------------------
    async def cluster_view(self) -> dict[str, Any]:
        """The leader's view (linearizable); the local, stale one if no leader answers."""
        leader = self.metadata.leader
        try:
            if leader == self.id:
                return await self._leader_view()
            if leader is not None:
                reply = await self.transport.call(leader, ClusterViewRequest(), VIEW_TIMEOUT_S)
                assert isinstance(reply, ClusterViewReply)
                return reply.view
        except (PeerUnreachable, FabricError) as exc:
            log.info("leader view unavailable: %s", exc)
        return self._view(leader=None, stale=True)

    async def _leader_view(self) -> dict[str, Any]:
        await self.metadata.read_index()
        return self._view(leader=self.id, stale=False)

    def _view(self, leader: str | None, stale: bool) -> dict[str, Any]:
        registered = self.metadata.state.nodes()
        nodes = []
        for nc in self.config.nodes:
            record = registered.get(nc.id)
            live = self.health.reports.get(nc.id, {}) if leader == self.id else {}
            role = (
                "leader"
                if nc.id == leader
                else ("voter" if nc.id in self.config.voters else "member")
            )
            nodes.append(
                {
                    "id": nc.id,
                    "address": nc.address,
                    "role": role,
                    "state": record.state if record else "DOWN",
                    "state_reason": record.reason if record else "never registered",
                    "disks": live.get("disks", list(nc.disks)),
                    "labels": dict(nc.labels),
                }
            )
        raft = self.metadata.raft
        containers = container_views(self.metadata.state)
        return {
            "name": self.config.name,
            "leader": leader,
            "term": raft.term if raft else 0,
            "commit_index": raft.commit_index if raft else 0,
            "applied_index": self.metadata.state.applied_index,
            "stale": stale,
            "served_by": self.id,
            "nodes": nodes,
            "containers": containers,
            "usage": cluster_usage(containers, nodes),
            "erasure_backend": self.ec.backend,
        }
