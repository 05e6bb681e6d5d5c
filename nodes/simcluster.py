"""A whole cluster of real ``Node`` objects inside the deterministic simulator.

Every node runs the same code as a real process, but on one ``VirtualLoop``, with a
``SimNetwork`` between them and ``SimDisk``s under them, all drawing randomness from
one seed. With ``faults=True`` each node also gets the fault wrappers a real process has
(``nodes.faultinject``: its clock, disks and sends, and a ``FaultAgent`` in
``sim.agents``), so the fault vocabulary of ``/api/v1/faults`` applies unchanged; a
node fault (kill, restart) becomes ``crash`` / ``restart`` here. ``crash`` is a power
loss (tasks gone, unsynced appends gone), ``restart`` builds the node again from what
its disks kept.

    with SimCluster(config, seed=7) as sim:
        sim.run(sim.start_all())
        sim.run(sim.sleep(5.0))        # five virtual seconds, a few ms of CPU

Every cluster runs the whole Raft checker set (``sim.checker``, see
``fabric.sim.checkers``) while it runs: election safety, each vote sent granted at most
once per term (across restarts), state-machine safety and in-order apply, leader
completeness against the new leader's durable log, and identical state-machine digests
at sampled indexes. The first violation stops the simulation: the ``sim.run`` in
progress raises it, with the seed. ``check_disks`` compares the simulated disks with
the metadata once a run has settled.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import random
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import xxhash

from fabric.buggify import OFF as buggify_off
from fabric.buggify import for_node as buggify_for_node
from fabric.config import ClusterConfig, NodeConfig
from fabric.consensus.types import (
    AppendRequest,
    AppendResponse,
    Entry,
    Role,
    SnapshotRequest,
    VoteRequest,
    VoteResponse,
)
from fabric.consensus.wal import decode_snapshot, decode_wal
from fabric.faults import Fault
from fabric.hardware import DEFAULT_DISK_BYTES, HardwareSpec
from fabric.keys import ClusterKeys
from fabric.ports import Runtime
from fabric.sim.checkers import DiskAudit, DiskMismatch, RaftChecker, SafetyViolation, check_disks
from fabric.sim.disk import SimDisk
from fabric.sim.http import SimHttp
from fabric.sim.loop import SimClock, VirtualLoop, sparse_collection
from fabric.sim.network import SimNetwork
from fabric.sim.records import referenced
from nodes.faultinject import FaultAgent, FaultyClock, FaultyDisk, NetFaults, ProcessFault
from nodes.node import Node
from nodes.services.metadata import SNAP, WAL, RaftObserver
from nodes.services.storage import SUFFIX, egroup_file

T = TypeVar("T")

DIGEST_EVERY_ENTRIES = 4
"""Every node's state machine is hashed after each index that is a multiple of this (or
of ``digest_stride``'s wider stride once the log is long): a full snapshot per applied
entry would make long runs quadratic."""


DIGEST_NODES = 8
"""State digests are taken on the voters and the first nodes of the config up to this
many: a digest costs a pass over the whole state, and a thousand nodes agreeing at an
index show no more than eight do (every node still feeds every other Raft check)."""


def digest_stride(index: int, every: int) -> int:
    """The stride of digested indexes around ``index``: ``every`` for the first 256
    entries, then doubling with each doubling of the log (64 digests per octave). A
    digest hashes the whole state, which grows with the log, so this keeps a long run's
    checking near n log n instead of n squared; every node digests the same indexes."""
    return max(every, 1 << max(0, index.bit_length() - 6))


_RAFT_MESSAGES = (VoteRequest, VoteResponse, AppendRequest, AppendResponse, SnapshotRequest)


class SimCluster:
    def __init__(
        self,
        config: ClusterConfig,
        seed: int,
        observer: RaftObserver | None = None,
        snapshot_every_entries: int | None = None,
        digest_every_entries: int = DIGEST_EVERY_ENTRIES,
        checks: bool = True,
        buggify: bool = False,
        faults: bool = False,
        hardware: HardwareSpec | None = None,
    ) -> None:
        """``checks=False`` runs no checker: only for benchmarks that time the protocol
        itself (the checkers' digests cost more than the protocol they watch).
        ``buggify``: the nodes' BUGGIFY points (``fabric.buggify``) are on, chosen by the
        seed. ``faults=True``: nodes can take injected faults (``agents``). ``hardware``:
        what disks and links cost (a scenario's ``[hardware]``); None or the default spec:
        no cost, the simulator as it always was."""
        self.config = config
        self.seed = seed
        self.hardware = hardware or HardwareSpec()
        self.rng = random.Random(seed)
        self.loop = VirtualLoop()
        self.loop.pausable = faults
        racks = {n.id: n.labels["rack"] for n in config.nodes if "rack" in n.labels}
        self.net = SimNetwork(random.Random(self.rng.getrandbits(64)), self.hardware.network, racks)
        self.clock = SimClock()
        self.snapshot_every_entries = snapshot_every_entries
        self.disks = {n.id: self._new_disks(n) for n in config.nodes}
        self.http = SimHttp(self.clock)
        """The URL sources every node's imports read from."""
        self.keys = ClusterKeys(hashlib.sha256(f"simulated cluster {seed}".encode()).digest())
        """The cluster secret, a function of the seed (not a draw: the seed's runs stay)."""
        self.nodes: dict[str, Node] = {}
        self._buggify_on = buggify
        self.buggify = {
            n.id: buggify_for_node(seed, n.id) if buggify else buggify_off for n in config.nodes
        }
        """Each node's points, kept across its restarts (its draws go on where they were)."""
        self.checker = RaftChecker()
        self.violation: SafetyViolation | None = None
        """The first safety violation seen; every later ``run`` raises it."""
        self._built: dict[str, Node] = {}
        """The latest Node object of each id, from before its start (its Raft reports in)."""
        self.observer: RaftObserver | None = observer
        self.faults = faults
        # A fault-injected cluster stands for processes on live hosts: a killed node's
        # peers are refused at once, as fabric run's are (not left to time out).
        self.net.refuse_dead = faults
        self.agents: dict[str, FaultAgent] = {}
        """The fault agent of each running node (``faults=True``); a restart brings a new
        one, with no fault active, as a restarted process has."""
        self._restarting: set[asyncio.Task[Node]] = set()
        if checks:
            watched = _Checks(self, observer, digest_every_entries)
            self.net.watchers.append(watched.sent)
            self.observer = watched

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for node_id in list(self.nodes):
            self.crash(node_id)
        # Cancel whatever a test left running (client tasks too), let it unwind, close.
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to its end on virtual time; raise the first safety violation any
        checker saw meanwhile (or before), whatever ``coro`` did."""
        if self.violation is not None:
            coro.close()
            raise self.violation
        try:
            with sparse_collection():
                result = self.loop.run_until_complete(coro)
        except BaseException as exc:
            if self.violation is not None:
                raise self.violation from exc
            raise
        if self.violation is not None:
            raise self.violation
        return result

    def guard(self, check: Callable[[], None]) -> None:
        """Run one checker step; on a violation, record it and stop the loop, so the
        ``run`` in progress ends with it instead of waiting out its deadlines."""
        try:
            check()
        except SafetyViolation as exc:
            if self.violation is None:
                self.violation = SafetyViolation(f"seed {self.seed}: {exc}")
                self.loop.stop()
            raise

    # --- membership -------------------------------------------------------------------------
    async def start_node(self, node_id: str) -> Node:
        assert node_id not in self.nodes, f"{node_id} is already running"
        holder: list[Node] = []
        transport = self.net.transport(node_id, lambda coro: holder[0].spawn(coro, "rpc"))
        runtime = Runtime(
            clock=self.clock,
            rng=random.Random(self.rng.getrandbits(64)),
            transport=transport,
            disks=list(self.disks[node_id]),
            fetcher=self.http,
            keys=self.keys,
            buggify=self.buggify.get(node_id, buggify_off),
        )
        if self.faults:
            runtime = self._faulty(node_id, runtime, transport)
        node = Node(self.config, node_id, runtime, self.observer, self.snapshot_every_entries)
        holder.append(node)
        self._built[node_id] = node
        await node.start()
        self.nodes[node_id] = node
        return node

    def _faulty(self, node_id: str, runtime: Runtime, transport: Any) -> Runtime:
        """``runtime`` with the wrappers ``nodes/main.py`` gives a real node's, and its agent."""
        clock = FaultyClock(self.clock)
        net = NetFaults(random.Random(self.rng.getrandbits(64)))
        transport.faults = net
        disks = [FaultyDisk(d, random.Random(self.rng.getrandbits(64))) for d in runtime.disks]
        process: dict[str, ProcessFault] = {
            "node-kill": lambda _: self._crash_if_running(node_id),
            "node-restart": lambda _: self._restart_soon(node_id),
            "node-pause": lambda fault: self._pause_for(node_id, fault),
        }
        self.agents[node_id] = FaultAgent(node_id, clock, disks, net, process)
        return replace(runtime, clock=clock, disks=list(disks))

    def _crash_if_running(self, node_id: str) -> None:
        if node_id in self.nodes:
            self.crash(node_id)

    def _restart_soon(self, node_id: str) -> None:
        """The process executes itself again: a crash, then a cold start from its disks."""
        self._crash_if_running(node_id)
        task = self.loop.create_task(self.restart(node_id))
        self._restarting.add(task)
        task.add_done_callback(self._restarting.discard)

    def _pause_for(self, node_id: str, fault: Fault) -> None:
        """SIGSTOP, and the resumer a real node starts for a pause with a duration."""
        self.pause(node_id)
        if fault.until_wall is not None:
            # Outside the node's context: its own timers wait for the resume.
            self.loop.call_later(
                fault.until_wall - fault.started_wall,
                self.resume,
                node_id,
                context=contextvars.Context(),
            )

    def pause(self, node_id: str) -> None:
        """Stop ``node_id`` as SIGSTOP does: it keeps its memory and runs nothing; what
        reaches it waits, and its peers' calls time out."""
        if node_id in self.nodes:
            self.loop.pause(node_id)

    def resume(self, node_id: str) -> None:
        self.loop.resume(node_id)

    def paused(self) -> set[str]:
        return set(self.loop.paused)

    def add_node(self, node: NodeConfig) -> None:
        """A new machine with empty disks (``fabric node add``): nodes started from now
        on get a config that lists it; those running keep theirs, as real ones do."""
        assert node.id not in self.disks, f"{node.id} exists"
        self.config = replace(self.config, nodes=(*self.config.nodes, node))
        self.buggify[node.id] = (
            buggify_for_node(self.seed, node.id) if self._buggify_on else buggify_off
        )
        self.disks[node.id] = self._new_disks(node)
        if "rack" in node.labels:
            self.net.racks[node.id] = node.labels["rack"]

    def _new_disks(self, node: NodeConfig) -> list[SimDisk]:
        model = self.hardware.disk
        default = DEFAULT_DISK_BYTES if model is None else model.capacity_bytes
        return [
            SimDisk(f"{node.id}/{d}", node.capacity_of(i) or default, model, self.clock)
            for i, d in enumerate(node.disks)
        ]

    async def start_all(self) -> None:
        for n in self.config.nodes:
            await self.start_node(n.id)

    def crash(self, node_id: str) -> None:
        """Power loss on ``node_id``: tasks, memory and unsynced writes are gone."""
        node = self.nodes.pop(node_id)
        self.loop.resume(node_id)  # a paused process dies too; its tasks unwind as it goes
        node.kill()
        self.agents.pop(node_id, None)
        self.net.detach(node_id)
        for disk in self.disks[node_id]:
            disk.crash()

    async def restart(self, node_id: str) -> Node:
        return await self.start_node(node_id)

    # --- time and observation ---------------------------------------------------------------
    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(
        self, predicate: Callable[[], bool], timeout_s: float, what: str = "condition"
    ) -> None:
        deadline = self.loop.time() + timeout_s
        while not predicate():
            if self.loop.time() >= deadline:
                raise AssertionError(
                    f"seed {self.seed}: {what} not reached within {timeout_s} virtual s"
                )
            await asyncio.sleep(0.01)

    def leader(self) -> str | None:
        """The running node that believes it leads with the highest term."""
        best: tuple[int, str] | None = None
        for node_id, node in self.nodes.items():
            raft = node.metadata.raft
            is_leader = raft is not None and raft.role == Role.LEADER
            if raft is not None and is_leader and (best is None or raft.term > best[0]):
                best = (raft.term, node_id)
        return best[1] if best else None

    def metadata_disk(self, node_id: str) -> SimDisk:
        """The disk that holds ``node_id``'s Raft log and snapshot (its first)."""
        return self.disks[node_id][0]

    def check_disks(self, strict: bool = False) -> DiskAudit:
        """The bytes on every simulated disk against the leader's metadata: each copy of a
        group in use is on its node and every extent matches its checksum (raises
        ``DiskMismatch``). Group files no record references are returned, or fail in
        ``strict`` mode. Call it once the run has settled."""
        leader = self.leader()
        if leader is None:
            raise AssertionError(f"seed {self.seed}: no leader to read the metadata from")
        state = self.nodes[leader].metadata.state
        try:
            return check_disks(
                referenced(state), self.disks, egroup_file, lambda p: p.endswith(SUFFIX), strict
            )
        except DiskMismatch as exc:
            raise DiskMismatch(f"seed {self.seed}: {exc}") from None


class _Checks:
    """What every node's Raft reports to: feeds ``sim.checker``, and adds the checks that
    look inside a node (its durable log, its state machine)."""

    def __init__(self, sim: SimCluster, extra: RaftObserver | None, digest_every: int) -> None:
        assert digest_every >= 1, "digest_every_entries must be positive"
        self.sim = sim
        self.extra = extra
        self.digest_every = digest_every
        config = sim.config
        self.digested = {n.id for n in config.nodes[:DIGEST_NODES]} | set(config.voters)
        self._leaders_checked: set[tuple[str, int]] = set()

    def observe_leader(self, node: str, term: int) -> None:
        self.sim.guard(lambda: self.sim.checker.observe_leader(node, term))
        if (node, term) not in self._leaders_checked:
            self._leaders_checked.add((node, term))
            self.sim.guard(lambda: self._check_leader_log(node, term))
        if self.extra:
            self.extra.observe_leader(node, term)

    def observe_applied(self, node: str, entry: Entry) -> None:
        # Called just before ``entry`` is applied: the state is the one after the index
        # before it, which every node must agree on.
        before = entry.index - 1
        built = self.sim._built.get(node)
        if (
            built is not None
            and before > 0
            and node in self.digested
            and before % digest_stride(before, self.digest_every) == 0
        ):
            state = built.metadata.state
            if state.applied_index == before:
                digest = xxhash.xxh3_128_digest(state.snapshot())
                self.sim.guard(lambda: self.sim.checker.observe_state(node, before, digest))
        self.sim.guard(lambda: self.sim.checker.observe_applied(node, entry))
        if self.extra:
            self.extra.observe_applied(node, entry)

    def observe_snapshot(self, node: str, index: int) -> None:
        self.sim.checker.observe_snapshot(node, index)
        if self.extra:
            self.extra.observe_snapshot(node, index)

    def sent(self, frm: str, to: str, message: Any) -> None:
        if isinstance(message, _RAFT_MESSAGES):
            self.sim.guard(lambda: self.sim.checker.observe_sent(message))

    def _check_leader_log(self, node: str, term: int) -> None:
        """Leader completeness on what the new leader has on disk: a log that holds a
        committed entry only in memory would lose it to a crash. A node reports after
        performing a Ready, and a simulated disk completes its writes without yielding to
        the loop, so every entry Raft handed out is on disk by then."""
        disk = self.sim.metadata_disk(node)
        snap = disk.contents(SNAP)
        snapshot_index = decode_snapshot(snap).index if snap else 0
        wal = decode_wal(disk.contents(WAL) or b"")
        entries = {e.index: e for e in wal.entries}
        self.sim.checker.check_leader_log(node, term, entries, snapshot_index)
