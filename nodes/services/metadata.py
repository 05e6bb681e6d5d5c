"""The metadata service: drives this node's Raft and applies the replicated log.

Theory of operation
-------------------
Raft (``fabric.consensus.raft``) is a pure state machine; this service is its driver.
One loop owns it: whenever something happened (a tick, a message, a proposal), it takes
``raft.ready()`` and performs it in the documented order:

1. persist the hard state, snapshot and new entries, then one fsync for all of them
   (proposals that arrive while an fsync runs share the next one: group commit);
2. send the messages;
3. apply committed entries to ``MetadataState`` and wake the proposers waiting on them;
4. answer linearizable reads whose index is now applied.

What does not depend on the write goes first (``Ready.early_messages``,
``Ready.early_apply``): a leader sends its appends before its own fsync, and answers the
proposers of entries that earlier Readies persisted, so under load its fsync, the
followers' fsyncs and the replies to clients all overlap. A Ready that only moved the
commit index writes nothing: the next write carries it (a restart learns it again from
the leader).

A proposal made on a follower is forwarded to the leader, which answers once the entry
is applied there. A linearizable read asks the leader for a read index (Raft's
ReadIndex) and waits until this node has applied that far, so any node serves reads
that are never stale.

Durable files on the node's first disk: ``raft.wal`` (hard states and entries, see
``fabric.consensus.wal``) and ``raft.snap`` (the latest state-machine snapshot). A
corrupt log stops the node at start with ``CorruptLog``; it never serves state it
cannot trust. A WAL that cannot be written (a full disk) holds the Ready in step 1:
nothing of it is sent, ``wal_fault`` says why, and the write is retried until it
succeeds. ``halt`` takes the node out of consensus for good (a bug elsewhere): Readies
are then drained and dropped, so it never speaks for state it may not have kept.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

from fabric import limits
from fabric.config import ClusterConfig
from fabric.consensus.raft import Raft
from fabric.consensus.types import (
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    MembershipChangeRefused,
    Message,
    NotLeader,
    RaftConfig,
    Ready,
    Restored,
    Role,
    Snapshot,
)
from fabric.consensus.wal import (
    decode_snapshot,
    decode_wal,
    encode_entry,
    encode_hard_state,
    encode_snapshot,
)
from fabric.errors import BadRequest, Conflict, FabricError, Timeout, Unavailable, from_code
from fabric.metadata import validate
from fabric.metadata.commands import Command
from fabric.metadata.state import MetadataState, Result
from fabric.ports import Clock, Disk, DiskFault, PeerUnreachable, Transport
from fabric.wire.codec import encode
from fabric.wire.messages import (
    MembershipRequest,
    ProposeReply,
    ProposeRequest,
    ReadIndexReply,
    ReadIndexRequest,
)

log = logging.getLogger(__name__)

WAL = "raft.wal"
SNAP = "raft.snap"
FORWARD_TIMEOUT_S = limits.PROPOSAL_TIMEOUT_S + 1.0
"""Longer than the leader's own wait for a commit: a slow leader answers (done, or timed
out) before we give up on it, so a forwarded command is rarely proposed twice."""


class RaftObserver(Protocol):
    """What the simulator's checkers watch (see ``fabric.sim.checkers``)."""

    def observe_leader(self, node: str, term: int) -> None: ...
    def observe_applied(self, node: str, entry: Entry) -> None: ...
    def observe_snapshot(self, node: str, index: int) -> None: ...


class MetadataService:
    wal_fault: str | None = None
    """Why the last Raft WAL write failed, while the driver retries it; None when written."""
    halted: str | None = None
    """Why this node left consensus for good (see ``halt``); None while it takes part."""
    state_lost = False
    """Its Raft state was lost at start (see ``open``): it abstains until re-added."""
    _compact_after_s = 0.0
    """Clock time before which no snapshot is tried again, after one could not be written."""

    def __init__(
        self,
        node_id: str,
        config: ClusterConfig,
        clock: Clock,
        rng: random.Random,
        transport: Transport,
        disk: Disk,
        observer: RaftObserver | None = None,
        snapshot_every_entries: int = limits.SNAPSHOT_EVERY_ENTRIES,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.clock = clock
        self.rng = rng
        self.transport = transport
        self.disk = disk
        self.observer = observer
        self.snapshot_every_entries = snapshot_every_entries
        self.state = MetadataState()
        self.raft: Raft | None = None
        self._wake = asyncio.Event()
        self._leading = asyncio.Event()
        """Set by the driver once this node leads (``until_leader``)."""
        self._proposals: dict[int, tuple[int, asyncio.Future[Result], float]] = {}
        """Log index -> (term, future, deadline) of this leader's waiting proposers, oldest
        first (see ``_arm_expiry``)."""
        self._expiry: asyncio.TimerHandle | None = None
        self._reads: dict[int, asyncio.Future[int]] = {}
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._read_ctx = itertools.count(1)
        self._persisted: list[Entry] = []
        """Entries in the WAL after the snapshot: kept to rewrite the WAL on compaction."""
        self.heard: dict[str, float] = {}
        """Peer -> when (``clock.now()``) it last answered this node's appends or
        heartbeats: proof that it runs and hears this leader, which the health monitor
        counts as a report (so a big cluster's nodes may report rarely)."""
        self._hard_state = HardState()
        self._wal_hard_state = HardState()
        """The newest hard state in the WAL (``_hard_state`` may be ahead by its commit)."""
        self._snapshot_index = 0
        self._apply_hooks: list[Callable[[int, Command, Result], None]] = []
        self.commits = 0
        self.wal_syncs = 0
        self.wal_entries = 0
        """Fsyncs of the WAL and entries they made durable: their ratio is the batch size
        that group commit reaches."""

    # --- start ------------------------------------------------------------------------------
    async def open(self, ran_before: bool = False) -> None:
        """Read the durable state back and build Raft from it (raises CorruptLog).

        ``ran_before``: this node's other disks show it was a member already. Then no
        Raft state at all means it was lost (a wiped or replaced disk), and Raft starts
        abstaining (``RaftConfig.abstain``) until the node is re-added."""
        snap_bytes = await self.disk.read(SNAP)
        snapshot = decode_snapshot(snap_bytes) if snap_bytes else None
        wal_bytes = await self.disk.read(WAL)
        wal = decode_wal(wal_bytes or b"")
        self.state_lost = ran_before and not snap_bytes and not wal_bytes
        entries = [e for e in wal.entries if snapshot is None or e.index > snapshot.index]
        if snapshot is not None:
            self.state = MetadataState.restore(snapshot.data)
            self._snapshot_index = snapshot.index
        self._hard_state = wal.hard_state
        self._persisted = entries
        # Rewrite the WAL so a torn tail never sits in front of new appends.
        await self._rewrite_wal()
        tm = self.config.timeouts
        cfg = RaftConfig(
            id=self.node_id,
            voters=self.config.voters,
            learners=self.config.learners,
            election_ticks=tm.election_ticks,
            heartbeat_ticks=tm.heartbeat_ticks,
            learner_heartbeat_every=tm.learner_heartbeat_every,
            lazy_learners=tm.learner_heartbeat_every > 1,
            abstain=self.state_lost,
        )
        if self.state_lost:
            log.error(
                "%s: its Raft state is gone but its disks show it was a member: it takes "
                "no part in elections until re-added (fabric node rejoin %s)",
                self.node_id,
                self.node_id,
            )
        restored = Restored(wal.hard_state, snapshot, tuple(entries))
        self.raft = Raft(cfg, self.rng, restored)
        if self.observer:
            self.observer.observe_snapshot(self.node_id, self._snapshot_index)

    async def run(self) -> None:
        """The driver loop; runs until cancelled (restarting it is safe only once halted:
        a Ready it was performing would be lost)."""
        raft = self._raft()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while raft.has_ready():
                rd = raft.ready()
                if self.halted is None:
                    await self._handle(rd)
                    self._observe()

    def halt(self, reason: str) -> None:
        """Leave consensus until the process restarts: from now on nothing is persisted,
        sent or applied. Raft still steps what arrives, so ``leader`` keeps naming the
        real leader (the node reports to it why it is out); dropping every Ready unsent is
        the same to the others as losing each message, which Raft tolerates."""
        if self.halted is None:
            self.halted = reason
            self._wake.set()

    async def tick_forever(self) -> None:
        """Tick Raft every ``tick_ms`` until cancelled. The ticks are a chain of loop
        timers, not a sleeping task: a tick is the most frequent thing every node does,
        and a timer costs one callback where a sleep costs a future and a task step. The
        task only holds the chain: cancelling it (a stop, a simulated crash) cuts it, and
        a tick that raises ends it with that error, for the supervisor to see."""
        tick_s = self.config.timeouts.tick_ms / 1000
        # A learner never campaigns: its ticks only age its view of the leader, so it
        # takes them a learner heartbeat's worth at a time. In a big cluster almost every
        # node is a learner, and this is most of what an idle one does.
        t = self.config.timeouts
        batch = t.heartbeat_ticks * t.learner_heartbeat_every
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        handle: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal handle
            try:
                raft = self._raft()
                ticks = batch if raft.role is Role.LEARNER else 1
                raft.tick(ticks)
                # Most ticks change nothing to act on; waking the driver for them would
                # cost a task switch per node per tick.
                if raft.has_ready():
                    self._wake.set()
            except Exception as exc:
                if not ended.done():
                    ended.set_exception(exc)
                return
            handle = loop.call_later(tick_s * ticks, tick)

        handle = loop.call_later(tick_s, tick)
        try:
            await ended
        finally:
            handle.cancel()

    def _arm_expiry(self) -> None:
        """One timer for every waiting proposal, set for the oldest one's deadline (they
        grow in insertion order): a proposal costs no timer of its own. A loop timer, not
        a task: it fires even on a node whose tasks are gone (a simulated crash)."""
        if self._expiry is None and self._proposals:
            _, _, deadline = next(iter(self._proposals.values()))
            delay_s = max(0.0, deadline - self.clock.now())
            self._expiry = asyncio.get_running_loop().call_later(delay_s, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        now = self.clock.now()
        while self._proposals:
            index = next(iter(self._proposals))
            _, future, deadline = self._proposals[index]
            if deadline > now:
                break  # the rest are younger
            del self._proposals[index]
            if not future.done():
                future.set_exception(Timeout("metadata change not committed in time"))
        self._arm_expiry()

    # --- inputs -----------------------------------------------------------------------------
    def step(self, message: Message) -> None:
        if isinstance(message, AppendResponse):
            self.heard[message.frm] = self.clock.now()
        self._raft().step(message)
        self._wake.set()

    def wake(self) -> None:
        """Have the driver take Raft's Ready now (for callers that drove Raft directly)."""
        self._wake.set()

    @property
    def leader(self) -> str | None:
        return self.raft.leader if self.raft else None

    @property
    def is_leader(self) -> bool:
        return self.raft is not None and self.raft.role == Role.LEADER

    def on_apply(self, hook: Callable[[int, Command, Result], None]) -> None:
        """Call ``hook(index, command, result)`` after each command is applied."""
        self._apply_hooks.append(hook)

    async def propose(self, command: Command) -> Result:
        """Commit ``command`` through the leader; return what applying it produced."""
        problem = validate.problem(command)
        if problem is not None:
            raise BadRequest(problem)
        data = encode(command)
        if len(data) > limits.MAX_COMMAND_BYTES:
            raise FabricError(f"metadata command of {len(data)} bytes is too large")
        deadline = self.clock.now() + limits.PROPOSAL_TIMEOUT_S
        while True:
            leader = self._raft().leader
            try:
                if leader == self.node_id:
                    return await self._propose_local(data)
                if leader is not None:
                    return await self._forward(leader, data)
            except (NotLeader, PeerUnreachable, Unavailable):
                pass
            if self.clock.now() >= deadline:
                raise Unavailable("no metadata leader could commit the change in time")
            await self.clock.sleep(self.config.timeouts.tick_ms / 1000)

    async def _propose_local(self, data: bytes) -> Result:
        raft = self._raft()
        if len(self._proposals) >= limits.MAX_PENDING_PROPOSALS:
            raise Unavailable("too many metadata changes in flight; retry")
        index = raft.propose(data)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        stale = self._proposals.pop(index, None)
        if stale is not None and not stale[1].done():
            # Our log lost that index with an old term: its proposer hears it now.
            stale[1].set_exception(Unavailable("leadership changed before commit; retry"))
        deadline = self.clock.now() + limits.PROPOSAL_TIMEOUT_S
        self._proposals[index] = (raft.term, future, deadline)
        self._arm_expiry()
        self._wake.set()
        try:
            return await future
        finally:
            if self._proposals.get(index, (0, None))[1] is future:
                del self._proposals[index]

    async def _forward(self, leader: str, data: bytes) -> Result:
        reply = await self.transport.call(leader, ProposeRequest(data), FORWARD_TIMEOUT_S)
        assert isinstance(reply, ProposeReply)
        # Answer only once this node has applied it too: a client that wrote through any
        # node reads its write back from that node.
        await self.wait_applied(reply.index)
        return Result(reply.ok, reply.value, reply.code, reply.message)

    async def serve_forwarded(self, request: ProposeRequest, frm: str) -> ProposeReply:
        """A follower forwarded a proposal: commit it here if we lead."""
        if not self.is_leader:
            raise Unavailable(f"{self.node_id} is not the leader")
        # A peer's bytes, checked when the request was decoded (``checks.propose_request``)
        # before they reach the log; apply checks them again.
        try:
            result = await self._propose_local(request.command)
        except NotLeader as exc:
            raise Unavailable(str(exc)) from None
        index = self.state.applied_index  # applied through the proposal (or beyond)
        self.catch_up(frm, index)  # it answers its caller once it has applied it too
        return ProposeReply(result.ok, result.value, result.code, result.message, index)

    # --- membership changes -----------------------------------------------------------------
    async def change_membership(self, op: str, node: str) -> int:
        """Add ``node`` as a learner, ``promote`` it to voter, or ``remove`` it: one Raft
        configuration change, computed by the leader from its current configuration and
        committed. Retries while the change must wait (an earlier one uncommitted, the
        learner not caught up) until ``limits.MEMBERSHIP_CHANGE_TIMEOUT_S``; a change
        that breaks a rule raises ``Conflict``. Returns the index it committed at."""
        deadline = self.clock.now() + limits.MEMBERSHIP_CHANGE_TIMEOUT_S
        why = "no leader"
        while True:
            leader = self._raft().leader
            try:
                if leader == self.node_id:
                    return await self._change_local(op, node)
                if leader is not None:
                    reply = await self.transport.call(
                        leader, MembershipRequest(op, node), FORWARD_TIMEOUT_S
                    )
                    assert isinstance(reply, ProposeReply)
                    if not reply.ok:
                        raise from_code(reply.code, reply.message)
                    if not (op == "remove" and node == self.node_id):
                        # (Removed, this node may never hear that its removal committed:
                        # the leader stops replicating to it once it has.)
                        await self.wait_applied(reply.index)
                    return reply.index
            except MembershipChangeRefused as exc:
                if not exc.retryable:
                    raise Conflict(str(exc)) from None
                why = str(exc)
            except (NotLeader, PeerUnreachable, Unavailable) as exc:
                why = str(exc)
            if self.clock.now() >= deadline:
                raise Unavailable(f"membership change {op} {node} not made in time: {why}")
            await self.clock.sleep(self.config.timeouts.tick_ms / 1000)

    async def _change_local(self, op: str, node: str) -> int:
        raft = self._raft()
        voters, learners = list(raft.voters), list(raft.learners)
        if op == "add_learner":
            if node in voters or node in learners:
                return raft.membership_index  # already a member: nothing to change
            learners.append(node)
        elif op == "promote":
            if node in voters:
                return raft.membership_index
            if node not in learners:
                raise Conflict(f"{node} is not a member yet: add it first")
            learners.remove(node)
            voters.append(node)
        elif op == "remove":
            if node not in voters and node not in learners:
                return raft.membership_index
            voters = [v for v in voters if v != node]
            learners = [n for n in learners if n != node]
        else:
            raise BadRequest(f"unknown membership change {op!r}")
        try:
            index = raft.propose_membership(tuple(voters), tuple(learners))
        finally:
            self._wake.set()  # a learner to promote was told to catch up, even if refused
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        deadline = self.clock.now() + limits.PROPOSAL_TIMEOUT_S
        self._proposals[index] = (raft.term, future, deadline)
        self._arm_expiry()
        try:
            await future
        finally:
            if self._proposals.get(index, (0, None))[1] is future:
                del self._proposals[index]
        return index

    async def serve_membership(self, request: MembershipRequest, frm: str) -> ProposeReply:
        if not self.is_leader:
            raise Unavailable(f"{self.node_id} is not the leader")
        try:
            index = await self._change_local(request.op, request.node)
        except NotLeader as exc:
            raise Unavailable(str(exc)) from None
        except MembershipChangeRefused as exc:
            code = "unavailable" if exc.retryable else "conflict"
            return ProposeReply(False, None, code, str(exc), 0)
        self.catch_up(frm, index)
        return ProposeReply(True, index, "", "", index)

    async def read_index(self) -> int:
        """A linearizable read point: every change committed before this call is at or
        below the returned index, which this node has applied on return."""
        if self.config.debug.stale_reads:
            return self.state.applied_index  # broken on purpose: see DebugSettings
        if self.raft is None:
            # The API serves before the log is open (health probes, the token gate): a
            # read then is "not yet", not a bug.
            raise Unavailable("the node is starting: its metadata is not open yet")
        deadline = self.clock.now() + limits.PROPOSAL_TIMEOUT_S
        while True:
            leader = self._raft().leader
            try:
                if leader == self.node_id:
                    index = await self._read_index_local()
                    break
                if leader is not None:
                    reply = await self.transport.call(leader, ReadIndexRequest(), FORWARD_TIMEOUT_S)
                    assert isinstance(reply, ReadIndexReply)
                    index = reply.index
                    break
            except (NotLeader, PeerUnreachable, Unavailable, Timeout):
                pass
            if self.clock.now() >= deadline:
                raise Unavailable("no metadata leader answered a read in time")
            await self.clock.sleep(self.config.timeouts.tick_ms / 1000)
        await self.wait_applied(index)
        return index

    async def _read_index_local(self) -> int:
        ctx = next(self._read_ctx)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads[ctx] = future
        self._raft().read_index(ctx)
        self._wake.set()
        try:
            return await asyncio.wait_for(future, FORWARD_TIMEOUT_S)
        except TimeoutError:
            raise Timeout("leader could not confirm a read index in time") from None
        finally:
            self._reads.pop(ctx, None)

    async def serve_read_index(self, frm: str) -> ReadIndexReply:
        if not self.is_leader:
            raise Unavailable(f"{self.node_id} is not the leader")
        try:
            index = await self._read_index_local()
        except NotLeader as exc:
            raise Unavailable(str(exc)) from None
        self.catch_up(frm, index)  # it reads once it has applied this far
        return ReadIndexReply(index)

    def catch_up(self, peer: str, index: int) -> None:
        """``peer`` waits to apply ``index``: send it the log that far now (a learner of a
        big cluster otherwise gets entries only with its heartbeats)."""
        if self.raft is not None:
            self.raft.catch_up(peer, index)
            self._wake.set()

    async def wait_applied(self, index: int) -> None:
        if self.state.applied_index >= index:
            return
        stuck = self.halted or self.wal_fault
        if stuck is not None:
            # Halted, or its driver retrying a WAL write: nothing more is applied until
            # it is back, so a read (a console page, a token catch-up) is told at once.
            raise Unavailable(f"node {self.node_id} is out of service: {stuck}")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, future))
        try:
            await asyncio.wait_for(future, limits.PROPOSAL_TIMEOUT_S)
        except TimeoutError:
            raise Timeout(f"{self.node_id} did not catch up to index {index} in time") from None

    # --- performing a Ready -----------------------------------------------------------------
    async def _handle(self, rd: Ready) -> None:
        for message in rd.early_messages:
            self.transport.send(message.to, message)
        if rd.early_apply:
            self._apply_ready(rd)
        await self._persist(rd)
        if self.halted is not None:
            return  # halted before the Ready was durable: nothing else of it may leave
        for message in rd.messages:
            self.transport.send(message.to, message)
        if not rd.early_apply:
            self._apply_ready(rd)
        due = self.state.applied_index - self._snapshot_index >= self.snapshot_every_entries
        if due and self.clock.now() >= self._compact_after_s:
            try:
                await self._compact()
            except DiskFault as exc:
                # Both files are replaced atomically, so a failure leaves a WAL that still
                # opens; the log just grows until the next try.
                self._compact_after_s = self.clock.now() + limits.COMPACTION_RETRY_S
                log.warning(
                    "raft log not compacted (next try in %g s): %s", limits.COMPACTION_RETRY_S, exc
                )

    def _apply_ready(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        for entry in rd.committed:
            self._apply(entry)
        for rs in rd.read_states:
            future = self._reads.get(rs.ctx)
            if future is not None and not future.done():
                future.set_result(rs.index)
        if rd.committed or rd.snapshot is not None:
            self._wake_applied()

    async def _persist(self, rd: Ready) -> None:
        """Make ``rd``'s state durable: until then nothing of it may be sent or applied.

        A failed write (a full disk, say) sets ``wal_fault``, which takes the node out of
        service, and is retried with growing waits until it succeeds or the node halts.
        """
        wait_s = limits.WAL_RETRY_BACKOFF_MIN_S
        while self.halted is None:
            try:
                await self._write_ready(rd)
            except DiskFault as exc:
                if self.wal_fault is None:
                    log.error(
                        "raft WAL on %s cannot be written, out of service: %s", self.disk.name, exc
                    )
                    self._fail_waiters(f"{self.node_id} is out of service: {exc}; retry")
                self.wal_fault = f"raft WAL cannot be written: {exc}"
                await self.clock.sleep(wait_s)
                wait_s = min(2 * wait_s, limits.WAL_RETRY_BACKOFF_MAX_S)
                continue
            if self.wal_fault is not None:
                log.warning("raft WAL on %s written again, back in service", self.disk.name)
                self.wal_fault = None
            return

    def _fail_waiters(self, why: str) -> None:
        """Proposers and readers waiting here learn now that it may take long (an entry
        may still commit: the outcome is unknown, as after a timeout) and can try another
        leader."""
        futures = [f for _, f, _ in self._proposals.values()] + list(self._reads.values())
        for future in futures:
            if not future.done():
                future.set_exception(Unavailable(why))

    async def _write_ready(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            # An installed snapshot replaces the whole log: rewrite the WAL from scratch.
            await self.disk.write_atomic(SNAP, encode_snapshot(rd.snapshot))
            self._snapshot_index = rd.snapshot.index
            self._hard_state = rd.hard_state or self._hard_state
            self._persisted = list(rd.entries)
            await self._rewrite_wal()
            return
        if rd.hard_state is not None:
            self._hard_state = rd.hard_state
        if not rd.must_sync and self.wal_fault is None:
            return  # only the commit index moved: the next write carries it
        chunks: list[bytes] = []
        if self._hard_state != self._wal_hard_state:
            chunks.append(encode_hard_state(self._hard_state))
        if rd.entries:
            self._mirror(rd.entries)
            chunks.extend(encode_entry(e) for e in rd.entries)
        if self.wal_fault is not None:
            # The failed append may have left a torn record at the tail: appending after
            # it would bury it mid-log, where it reads as corruption. Write it all anew.
            await self._rewrite_wal()
        elif chunks:
            await self.disk.append(WAL, b"".join(chunks))
            await self.disk.sync(WAL)
            self.wal_syncs += 1
            self.wal_entries += len(rd.entries)
        self._wal_hard_state = self._hard_state

    def _mirror(self, entries: list[Entry]) -> None:
        """Keep ``_persisted`` equal to the WAL's entries: new ones replace any from their
        first index on (a follower's conflicting suffix), at a cost of the batch, not of
        the whole log."""
        kept = self._persisted
        first = entries[0].index
        if kept and first <= kept[-1].index:
            del kept[max(0, first - kept[0].index) :]
        assert not kept or kept[-1].index + 1 == first, f"WAL gap before entry {first}"
        kept.extend(entries)

    def _install(self, snapshot: Snapshot) -> None:
        self.state = MetadataState.restore(snapshot.data)
        if self.observer:
            self.observer.observe_snapshot(self.node_id, snapshot.index)
        for index in [i for i in self._proposals if i <= snapshot.index]:
            _, future, _ = self._proposals[index]
            if not future.done():
                future.set_exception(Unavailable("outcome unknown after a snapshot; retry"))

    def _apply(self, entry: Entry) -> None:
        if self.observer:
            self.observer.observe_applied(self.node_id, entry)
        if entry.kind in (EntryKind.NOOP, EntryKind.CONFIG):
            # A configuration change is Raft's own (in force since it was appended): the
            # state machine only moves past it.
            self.state.skip(entry.index)
            result = Result(ok=True, value=entry.index)
        else:
            # Total: an entry that does not decode or is malformed comes back refused.
            command, result = self.state.apply_entry(entry.index, entry.data)
            self.commits += 1
            if command is not None:
                for hook in self._apply_hooks:
                    hook(entry.index, command, result)
        waiting = self._proposals.get(entry.index)
        if waiting is not None:
            term, future, _ = waiting
            if future.done():
                return
            if term == entry.term:
                future.set_result(result)
            else:
                future.set_exception(Unavailable("leadership changed before commit; retry"))

    def _wake_applied(self) -> None:
        applied = self.state.applied_index
        keep = []
        for index, future in self._applied_waiters:
            if index <= applied:
                if not future.done():
                    future.set_result(None)
            elif not future.done():
                keep.append((index, future))
        self._applied_waiters = keep

    async def _compact(self) -> None:
        index = self.state.applied_index
        term = next((e.term for e in self._persisted if e.index == index), None)
        if term is None:
            return  # the applied entry is not in our WAL mirror (just installed a snapshot)
        data = self.state.snapshot()
        # Snapshot file first: a crash before the WAL rewrite leaves entries that open()
        # skips because the snapshot already covers them.
        raft = self._raft()
        snapshot = Snapshot(index, term, data, raft.membership_at(index))
        await self.disk.write_atomic(SNAP, encode_snapshot(snapshot))
        raft.compact(index, data)
        self._snapshot_index = index
        self._persisted = [e for e in self._persisted if e.index > index]
        await self._rewrite_wal()
        if self.observer:
            self.observer.observe_snapshot(self.node_id, index)

    async def _rewrite_wal(self) -> None:
        body = encode_hard_state(self._hard_state) + b"".join(map(encode_entry, self._persisted))
        await self.disk.write_atomic(WAL, body)
        self._wal_hard_state = self._hard_state

    # --- helpers ----------------------------------------------------------------------------
    def _raft(self) -> Raft:
        assert self.raft is not None, "metadata service used before open()"
        return self.raft

    def _observe(self) -> None:
        raft = self._raft()
        if raft.role == Role.LEADER:
            self._leading.set()
            if self.observer:
                self.observer.observe_leader(self.node_id, raft.term)

    async def until_leader(self) -> None:
        """Return once this node leads (at once if it does). The leader's own loops
        (scanner, rebuild planner, health monitor) wait here on every other node instead
        of waking to find they have nothing to do: in a big cluster that is most nodes.
        A new leader always has a Ready to perform (its first entry), which sets it."""
        while not self.is_leader:
            self._leading.clear()
            await self._leading.wait()

    def status(self) -> dict[str, Any]:
        return {**self._raft().status(), "applied_index": self.state.applied_index}
