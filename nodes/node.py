"""A node: the services of one fabric member, wired to whatever runtime it is given.

The same ``Node`` runs as a real process (``nodes.main`` with ``nodes.runtime``) and
inside the simulator (``nodes.simcluster`` with ``fabric.sim``); it never knows which.
It owns every task it starts, so ``stop()`` (a clean shutdown) and the simulator's
crash both end all of them.

No background task dies silently. Each runs under ``_supervised``: one that stops on
an operating fault (``FabricError``, ``PeerUnreachable``, ``DiskFault``) is logged and
started again after a backoff on the node's clock; anything else is a bug, and a bug,
or a task that ends when it should not, takes the node out of service for good (until
restarted): its Raft halts (no vote, no acknowledgement), the client API and the
Raft and storage-write calls of peers are refused, and the reason goes to the log,
``problems()`` (``/api/v1/health``) and the node's report, which the leader records
as DEGRADED with that reason (``fabric status``). A Raft WAL that cannot be written
takes the node out of service the same way, but only until the write succeeds again.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fabric import limits
from fabric.config import ClusterConfig
from fabric.consensus.types import (
    AppendRequest,
    AppendResponse,
    SnapshotRequest,
    VoteRequest,
    VoteResponse,
)
from fabric.errors import BadRequest, FabricError, OutOfService
from fabric.images.base import MemorySpill, ReaderLimits
from fabric.metadata.commands import RegisterNode
from fabric.ports import NODE_ID, DiskFault, PeerUnreachable, Runtime
from fabric.wire.messages import (
    AppendExtents,
    ClusterViewReply,
    ClusterViewRequest,
    DeleteEgroupFiles,
    ListEgroups,
    MembershipRequest,
    NodeReport,
    ProposeRequest,
    PullEgroup,
    ReadExtent,
    ReadIndexRequest,
    RepairExtent,
    StatEgroup,
)
from nodes.services.accounting import cluster_usage, container_views
from nodes.services.catalog import Catalog
from nodes.services.copier import Copier
from nodes.services.disks import DiskWatch
from nodes.services.ec import EcService
from nodes.services.events import EventLog
from nodes.services.health import HealthService
from nodes.services.images import ImageService
from nodes.services.inflight import GroupsInFlight
from nodes.services.membership import Membership
from nodes.services.metadata import MetadataService, RaftObserver
from nodes.services.reader import ReadCoordinator
from nodes.services.rebuild import RebuildService
from nodes.services.replicas import ReplicaClient
from nodes.services.scanner import Scanner, sweep_orphans
from nodes.services.scrubber import Scrubber
from nodes.services.storage import StorageService
from nodes.services.strips import StripReader
from nodes.services.trends import Counters, Trends
from nodes.services.writer import WriteCoordinator

log = logging.getLogger(__name__)

MEMBER_MARK = "member"
"""A small file on every disk of a node that registered: see ``Node._mark_disks``."""
OPERATING_FAULTS = (FabricError, PeerUnreachable, DiskFault)
"""What a supervised task may stop on and be started again after; anything else is a bug."""
LEADER_DUTIES = ("health-monitor", "scanner", "rebuild")
"""Tasks that act only through a working Raft: stopped when the node goes out of service."""


class Node:
    def __init__(
        self,
        config: ClusterConfig,
        node_id: str,
        runtime: Runtime,
        observer: RaftObserver | None = None,
        snapshot_every_entries: int | None = None,
        reader_limits: ReaderLimits | None = None,
    ) -> None:
        self.config = config
        self.node_config = config.node(node_id)
        self.id = node_id
        self.runtime = runtime
        self.clock = clock = runtime.clock
        self.rng = rng = runtime.rng
        self.transport = transport = runtime.transport
        self.disks = disks = runtime.disks
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
        work = runtime.offload
        # Built in dependency order, each from the ones before it: nothing is wired later.
        self.storage = StorageService(node_id, disks)
        self.disk_watch = DiskWatch(
            node_id,
            clock,
            disks,
            self.node_config.disks,
            self.storage,
            self.metadata,
            background_scale=config.timeouts.background_scale,
        )
        self.replicas = ReplicaClient(node_id, transport, self.storage, self.metadata)
        self.membership = Membership(config, self.metadata)
        self.catalog = Catalog(node_id, config, clock, rng, self.metadata, self.membership)
        self.strips = StripReader(self.metadata, self.replicas, work)
        self.reader = ReadCoordinator(
            node_id, config, clock, self.metadata, self.catalog, self.replicas, self.strips, work
        )
        self.writer = WriteCoordinator(
            node_id,
            config,
            clock,
            rng,
            self.metadata,
            self.catalog,
            self.replicas,
            self.reader,
            work,
            runtime.keys.dedup_key if runtime.keys is not None else None,
            spawn=self.spawn,
            buggify=runtime.buggify,
        )
        self.inflight = GroupsInFlight()
        self.ec = EcService(
            node_id,
            clock,
            rng,
            self.metadata,
            self.catalog,
            self.replicas,
            self.reader,
            self.strips,
            work,
            self.inflight,
            buggify=runtime.buggify,
        )
        self.images = ImageService(
            node_id,
            clock,
            rng,
            self.metadata,
            self.catalog,
            self.writer,
            work,
            runtime.spill_factory or MemorySpill,
            reader_limits or ReaderLimits(),
            runtime.fetcher,
            self.membership,
            config.import_allow,
            config.limits.pending_image_ttl_s,
            buggify=runtime.buggify,
        )
        self.events = EventLog(node_id, clock, self.metadata)
        self.trends = Trends(limits.TRENDS_KEPT)
        self.copier = Copier(node_id, self.storage, self.replicas, runtime.buggify)
        self.rebuild = RebuildService(
            node_id,
            config,
            clock,
            transport,
            self.metadata,
            self.catalog,
            self.copier,
            self.replicas,
            self.events,
            self.spawn,
            self.inflight,
        )
        self.scrubber = Scrubber(
            node_id,
            config,
            clock,
            self.metadata,
            self.storage,
            self.replicas,
            self.strips,
            self.events,
            work,
            buggify=runtime.buggify,
        )
        self.scanner = Scanner(
            node_id,
            clock,
            self.metadata,
            self.catalog,
            self.replicas,
            self.reader,
            self.ec,
            self.images,
            background_scale=config.timeouts.background_scale,
        )
        self.registered = False
        self.fault: str | None = None
        """Why a bug took this node out of service, for good (until restarted)."""
        self._out_since: float | None = None
        """Since when this node has been out of service, without a break (its reports say
        for how long)."""
        self.restarts: dict[str, int] = {}
        """Restarts after operating faults, by task name (shown in ``/api/v1/health``)."""
        self._duties: dict[str, asyncio.Task[Any]] = {}

    # --- lifecycle --------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        # Ours, whoever asked: a message handler runs in its sender's task.
        context = contextvars.copy_context()
        context.run(NODE_ID.set, self.id)
        task = asyncio.get_running_loop().create_task(
            coro, name=f"{self.id}:{name}", context=context
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def start(self) -> None:
        """Open durable state (raises CorruptLog) and start every service."""
        for name in self.config.debug.enabled():
            log.warning(
                "[debug] %s = true: this node is BROKEN ON PURPOSE and loses acknowledged "
                "writes; it exists to prove the checkers fail. Never use it for data.",
                name,
            )
        await self.metadata.open(ran_before=await self._ran_before())
        await self.storage.open()
        self.transport.serve(self._on_call, self._on_message)
        self.supervise("raft-driver", self.metadata.run, drives_raft=True)
        self.supervise("raft-ticker", self.metadata.tick_forever)
        self.supervise("health-report", self.health.report_forever)
        self.supervise("health-monitor", self.health.monitor_forever)
        self.supervise("register", self._register, finishes=True)
        self.supervise("scanner", self.scanner.run_forever)
        self.supervise("rebuild", self.rebuild.run_forever)
        self.supervise("resiliency-watch", self.rebuild.watch_forever)
        self.supervise("scrubber", self.scrubber.run_forever)
        self.supervise("disk-watch", self.disk_watch.run_forever)
        self.supervise("membership-watch", self._watch_membership)
        self.supervise("trends", self._sample_trends)

    def supervise(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        finishes: bool = False,
        drives_raft: bool = False,
    ) -> None:
        """Run ``run()`` as a background task under supervision. ``finishes``: it may
        return (its job done) rather than run until cancelled. ``drives_raft``: it
        performs Raft's Readies, so no fault of it can be retried (see ``_supervised``)."""
        task = self.spawn(self._supervised(name, run, finishes, drives_raft), name)
        self._duties[name] = task

    async def _supervised(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        finishes: bool,
        drives_raft: bool,
    ) -> None:
        wait_s = limits.TASK_RESTART_BACKOFF_MIN_S
        while True:
            started = self.clock.now()
            try:
                await run()
            except OPERATING_FAULTS as exc:
                if drives_raft and self.metadata.halted is None:
                    # It stopped halfway through a Ready: a new driver would skip the rest
                    # of it (persist, send, apply), so consensus cannot go on from here.
                    self.take_out_of_service(f"task {name} stopped: {exc!r}", exc)
                else:
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    log.warning("task %s stopped, restarting in %g s: %r", name, wait_s, exc)
            except Exception as exc:
                self.take_out_of_service(f"task {name} crashed: {exc!r}", exc)
                if not drives_raft:
                    return
                # Halted now, the driver only drains Raft: run it again so that what Raft
                # produces does not pile up.
            else:
                if finishes:
                    return
                self.take_out_of_service(f"task {name} ended", None)
                return
            if self.clock.now() - started >= limits.TASK_STABLE_AFTER_S:
                wait_s = limits.TASK_RESTART_BACKOFF_MIN_S
            await self.clock.sleep(wait_s)
            wait_s = min(2 * wait_s, limits.TASK_RESTART_BACKOFF_MAX_S)

    def take_out_of_service(self, reason: str, exc: BaseException | None) -> None:
        """Stop voting and serving, for good (until the process restarts), and say why."""
        log.error("node %s out of service: %s", self.id, reason, exc_info=exc)
        if self.fault is not None:
            return  # the first reason is the one to fix; later ones follow from it
        self.fault = reason
        self.metadata.halt(reason)
        current = asyncio.current_task()
        for name in LEADER_DUTIES:
            task = self._duties.get(name)
            if task is not None and task is not current:
                task.cancel()

    @property
    def out_of_service(self) -> str | None:
        """Why this node serves no client and takes no part in consensus; None if it does."""
        if self.fault is not None:
            return self.fault
        return self.metadata.wal_fault

    def problems(self) -> list[str]:
        """What keeps this node from full service right now, in words for an operator."""
        reason = self.out_of_service
        found = [] if reason is None else [f"out of service: {reason}"]
        raft = self.metadata.raft
        if raft is not None and raft.abstaining:
            found.append(
                f"Raft state lost: not voting until re-added (fabric node rejoin {self.id})"
            )
        return found

    def check_in_service(self) -> None:
        """Refuse (OutOfService, with the reason) work this node cannot do while out."""
        reason = self.out_of_service
        if reason is not None:
            raise OutOfService(f"node {self.id} is out of service: {reason}")

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def kill(self) -> None:
        """Simulated crash: cancel everything at once, no cleanup."""
        for task in list(self._tasks):
            task.cancel()

    async def _watch_membership(self) -> None:
        """Tell the transport when nodes join or leave (from the replicated metadata)."""
        known: dict[str, str] = {}
        while True:
            urls = self.membership.urls()
            if urls is not known and urls != known:
                self.transport.set_peers(urls)
                known = urls
            await self.clock.sleep(
                limits.MEMBERSHIP_WATCH_EVERY_S * self.config.timeouts.background_scale
            )

    async def _ran_before(self) -> bool:
        """Does any disk carry this node's member mark (written once it registered)?"""
        for disk in self.disks:
            try:
                if await disk.read(MEMBER_MARK) is not None:
                    return True
            except DiskFault:
                continue
        return False

    async def _mark_disks(self) -> None:
        """Mark every disk as this node's, so that losing the Raft state alone (the
        first disk wiped or replaced) is noticed at the next start."""
        mark = f"{self.config.id or self.config.name} {self.id}\n".encode()
        for disk in self.disks:
            try:
                await disk.write_atomic(MEMBER_MARK, mark)
            except DiskFault as exc:
                log.warning("could not mark disk %s: %s", disk.name, exc)

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
                await self._mark_disks()
                await self.disk_watch.check_held()
                return

    async def _local_report(self) -> tuple[str, dict[str, Any]]:
        """UP, or DEGRADED with a reason when every disk failed or the node is out of
        service. A node that lost some of its disks stays UP: it serves from the others
        (``DiskWatch`` reports each disk's state to the cluster)."""
        disks = self.disk_watch.report()
        io = {
            "written_bytes": sum(self.storage.bytes_written.values()),
            "read_bytes": sum(self.storage.bytes_read.values()),
        }
        problems = self.problems()
        failed = [str(d["name"]) for d in disks if d["state"] == "FAILED"]
        if self.disk_watch.all_failed:
            problems.append(f"every disk failed: {', '.join(failed)}")
        now = self.clock.now()
        if self.out_of_service is None and not self.disk_watch.all_failed:
            self._out_since = None
        elif self._out_since is None:
            self._out_since = now
        if not problems:
            return "UP", {"disks": disks, "io": io}
        detail: dict[str, Any] = {"disks": disks, "io": io, "reason": "; ".join(problems)}
        if self._out_since is not None:
            # It holds nothing the cluster can use: left so long, the leader calls it DOWN
            # and has its data rebuilt.
            detail["out_of_service_s"] = now - self._out_since
        return "DEGRADED", detail

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
                self.check_in_service()
                return await self.metadata.serve_forwarded(message, frm)
            case ReadIndexRequest():
                self.check_in_service()
                return await self.metadata.serve_read_index(frm)
            case MembershipRequest():
                self.check_in_service()
                return await self.metadata.serve_membership(message, frm)
            case NodeReport():
                self.check_in_service()
                if message.node_id != frm:
                    raise BadRequest(f"{frm} sent a health report for {message.node_id}")
                return self.health.receive(message)
            case ClusterViewRequest():
                self.check_in_service()
                return ClusterViewReply(await self._leader_view(message.trends))
            case AppendExtents() | RepairExtent():
                # New data is placed elsewhere; what this node holds stays readable.
                self.check_in_service()
                return await self.storage.handle(message)
            case PullEgroup():
                self.check_in_service()
                return await self.copier.pull(message)
            case ReadExtent() | DeleteEgroupFiles() | StatEgroup() | ListEgroups():
                return await self.storage.handle(message)
        raise BadRequest(f"unexpected call {type(message).__name__} from {frm}")

    # --- the cluster as users see it --------------------------------------------------------
    async def cluster_view(self, trends: int = 0) -> dict[str, Any]:
        """The leader's view (linearizable); the local, stale one if no leader answers.
        ``trends``: with that many of the leader's newest samples for the console's charts
        (``nodes/services/trends.py``); none in a stale view."""
        leader = self.metadata.leader
        try:
            if leader == self.id:
                if self.out_of_service is None:
                    return await self._leader_view(trends)
            elif leader is not None:
                reply = await self.transport.call(
                    leader, ClusterViewRequest(trends), limits.CLUSTER_VIEW_TIMEOUT_S
                )
                assert isinstance(reply, ClusterViewReply)
                return reply.view
        except (PeerUnreachable, FabricError) as exc:
            log.info("leader view unavailable: %s", exc)
        stale = self._view(leader=None, stale=True)
        return {**stale, "trends": {"taken": 0, "samples": []}} if trends else stale

    async def _leader_view(self, trends: int = 0) -> dict[str, Any]:
        await self.metadata.read_index()
        view = self._view(leader=self.id, stale=False)
        if trends:
            view["trends"] = {**self.trends.to_json(trends), "sampled_by": self.id}
        return view

    async def _sample_trends(self) -> None:
        """Every ``TRENDS_SAMPLE_S``, while this node leads, one sample for the charts."""
        every_s = limits.TRENDS_SAMPLE_S * self.config.timeouts.background_scale
        while True:
            if self.metadata.is_leader and self.out_of_service is None:
                self.trends.add(
                    self.clock.now(), self.clock.wall(), self._usage(), self._io_counters()
                )
            else:
                self.trends.clear()
            await self.clock.sleep(every_s)

    def _usage(self) -> dict[str, Any]:
        """The view's ``usage`` alone, from the reports this leader holds."""
        reports = self.health.reports
        nodes = [
            {"disks": reports.get(nc.id, {}).get("disks", [])} for nc in self.membership.nodes()
        ]
        return cluster_usage(container_views(self.metadata.state), nodes)

    def _io_counters(self) -> Counters:
        out: Counters = {}
        for node, report in self.health.reports.items():
            io = report.get("io", {})
            out[node] = (io.get("written_bytes", 0), io.get("read_bytes", 0))
        return out

    def _view(self, leader: str | None, stale: bool) -> dict[str, Any]:
        registered = self.metadata.state.nodes()
        nodes = []
        voters = self.membership.voters()
        for nc in self.membership.nodes():
            record = registered.get(nc.id)
            live = self.health.reports.get(nc.id, {}) if leader == self.id else {}
            role = cluster_role(nc.id, leader, voters)
            nodes.append(
                {
                    "id": nc.id,
                    "address": nc.address,
                    "role": role,
                    "state": record.state if record else "DOWN",
                    "state_reason": record.reason if record else "never registered",
                    "draining": bool(record and record.draining),
                    "disks": live.get("disks", list(nc.disks)),
                    "labels": dict(nc.labels),
                }
            )
        raft = self.metadata.raft
        containers = container_views(self.metadata.state)
        progress = self.rebuild.progress()
        for c in containers:
            c.update(progress.get(c["name"], {}))
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
            "rebuild": {
                **dataclasses.asdict(self.rebuild.settings()),
                "copies_running": len(self.rebuild.running),
            },
        }


def cluster_role(node_id: str, leader: str | None, voters: tuple[str, ...]) -> str:
    """A node's role in the words users see (``fabric status``, ``/api/v1/cluster``,
    ``/api/v1/health``): leader, voter, or member (holds data, no vote; Raft calls it a
    learner)."""
    if node_id == leader:
        return "leader"
    return "voter" if node_id in voters else "member"
