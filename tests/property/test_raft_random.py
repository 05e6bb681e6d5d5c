"""Randomized whole-cluster runs of ``Raft``: many seeds, faults, a checker after every step.

Each seed builds a cluster of 3 or 5 voters (sometimes plus a learner) in one process
and drives it tick by tick through an in-memory network that loses, duplicates, delays
and reorders messages, with partitions that come and go, nodes that crash (sometimes in
the middle of performing a ``Ready``) and restart from exactly what their ``Ready``s had
persisted, random proposals, linearizable reads and compactions. Disks may be slow: a
``Ready``'s write then completes some ticks later, after what may go first (a leader's
early appends, the apply of entries already written) and while the node keeps stepping
messages, as the real driver does; a crash in between loses the write. ``RaftChecker``
runs after every step (one leader per term, among leaders whose term is on their disk;
one vote per node and term; identical applied entries and state digests everywhere;
leader completeness; a leader's commit index, whenever it moves, on the disks of a
majority of the voters it counts with); the harness also checks that a leader commits
only entries of its own term, that a read's index covers every commit seen before the
read began, and that terms never go back. Then every fault is healed and the cluster
must make progress: a leader exists and a fresh proposal is applied on every member
within a bound.

With membership changes on, the cluster also has spare nodes outside the configuration,
and the leader keeps changing it under the same faults: it adds a spare as a learner,
promotes a learner, demotes or removes a voter (a crashed one first: replacing a dead
voter is a removal, then an addition, then a promotion), drops a learner, and now and
then asks for a change of two voters at once, which must be refused; a change may be
followed at once by a partition that splits the cluster, so that only part of it has
the change. Commit durability is judged by the leader because a follower's
configuration may be a change behind or ahead of the leader's: its own majority is not
the one that committed. Nodes also compact every 64 entries, as the real driver does.

A second test asks for liveness alone: at 10% message loss, with no partitions or
crashes, a leader is elected and commits within a bound, for every seed. Mutation
tests break the system on purpose and expect a checker to fire.

Replay one seed: ``RAFT_SEED=123 .venv/bin/python -m pytest tests/property/test_raft_random.py``;
run more: ``RAFT_SEEDS=2000 ...``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import json
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from fabric.consensus import membership
from fabric.consensus.raft import Raft
from fabric.consensus.types import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    MembershipChangeRefused,
    Message,
    RaftConfig,
    Ready,
    Restored,
    Role,
    Snapshot,
)
from fabric.sim.checkers import RaftChecker, SafetyViolation

CHAOS_TICKS = 500
HEAL_BOUND_TICKS = 400
LOSS_BOUND_TICKS = 150
SEEDS = (
    [int(os.environ["RAFT_SEED"])]
    if "RAFT_SEED" in os.environ
    else list(range(int(os.environ.get("RAFT_SEEDS", "200"))))
)


@dataclass(frozen=True)
class Faults:
    loss: float = 0.0
    duplicate: float = 0.0
    max_delay_ticks: int = 0
    partitions: bool = False
    partition_rate: float = 0.03
    """Chance per tick that a partition starts (or, when one is on, ends early)."""
    crashes: bool = False
    crash_rate: float = 0.02
    """Chance per tick that a node crashes."""
    slow_disk: float = 0.0
    """Chance that a Ready's write completes only 1-3 ticks later."""
    membership_rate: float = 0.0
    """Chance per tick that the leader tries a membership change."""
    split_on_change: float = 0.0
    """Chance that a membership change is followed at once by a partition that cuts the
    leader and a random part of the cluster off from the rest: the change reaches only
    some nodes, which is where the one-voter rule matters."""
    compact_every_entries: int = 0
    """A node also compacts once it applied this many entries past its snapshot, as the
    real driver does (0: only at random); a learner that was away while a lone voter
    committed hundreds of entries then catches up by a snapshot, within the bound."""


@dataclass
class Disk:
    """What a node's performed ``Ready``s persisted, as the ``Ready`` docstring says."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: dict[int, Entry] = field(default_factory=dict)

    def persist(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.snapshot is not None:
            self.save_snapshot(rd.snapshot)
        if rd.entries:
            first = rd.entries[0].index
            for index in [i for i in self.entries if i >= first]:
                del self.entries[index]
            self.entries.update((e.index, e) for e in rd.entries)

    def save_snapshot(self, snap: Snapshot) -> None:
        self.snapshot = snap
        for index in [i for i in self.entries if i <= snap.index]:
            del self.entries[index]

    def durable_log(self) -> tuple[int, dict[int, Entry]]:
        return (self.snapshot.index if self.snapshot else 0), self.entries

    def restored(self) -> Restored:
        entries = tuple(self.entries[i] for i in sorted(self.entries))
        return Restored(self.hard_state, self.snapshot, entries)


class StateMachine:
    """A hash chain over applied entries: equal digests mean equal histories."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.index, self.term, self.digest = 0, 0, b""
        if snapshot is not None:
            self.install(snapshot)

    def install(self, snap: Snapshot) -> None:
        self.index, self.term = snap.index, snap.term
        self.digest = snap.data

    def apply(self, e: Entry) -> None:
        assert e.index == self.index + 1
        self.index, self.term = e.index, e.term
        self.digest = hashlib.blake2b(self.digest + repr(e).encode(), digest_size=16).digest()


class Node:
    def __init__(self, cfg: RaftConfig, seed: float) -> None:
        self.cfg = cfg
        self.disk = Disk()
        self.raft: Raft | None = None
        self.sm = StateMachine()
        self.crash_at_ready: str | None = None
        """Crash while performing the next Ready: 'before_persist' or 'after_persist'."""
        self.writing: Ready | None = None
        """A Ready whose write a slow disk has not finished: no other Ready until it has."""
        self.written_at = 0
        self.down_until = 0
        self.start(seed)

    def start(self, seed: float) -> None:
        self.raft = Raft(self.cfg, random.Random(seed), self.disk.restored())
        self.sm = StateMachine(self.disk.snapshot)
        self.crash_at_ready = None
        self.writing = None


class Cluster:
    def __init__(
        self, seed: int, faults: Faults, voters: int, learner: bool, spares: int = 0
    ) -> None:
        self.rng = random.Random(seed)
        self.faults = faults
        self.now = 0
        self.checker = RaftChecker()
        self.trace: deque[str] = deque(maxlen=40)
        ids = [f"n{i}" for i in range(voters + learner + spares)]
        rng = self.rng
        base = RaftConfig(
            id="",
            voters=tuple(ids[:voters]),
            learners=tuple(ids[voters : voters + learner]),
            election_ticks=10,
            heartbeat_ticks=rng.choice([1, 2, 3]),
            max_append_entries=rng.choice([2, 8, 256]),
            max_append_bytes=rng.choice([40, 1 << 20]),
            max_inflight_appends=rng.choice([1, 3, 64]),
        )
        self.nodes = {i: Node(_with_id(base, i), rng.random()) for i in ids}
        for node_id in ids:
            self.checker.observe_snapshot(node_id, 0)
        self.group: dict[str, int] = {}
        """Partition: nodes talk only within their group (empty: no partition)."""
        self.partition_until = 0
        self._net: list[tuple[int, float, int, Message]] = []
        self._seq = itertools.count()
        self._proposals = itertools.count()
        self._reads: dict[int, int] = {}
        """Pending read ctx -> the commit index it must reflect at least."""
        self._max_commit = 0
        self._terms: dict[str, int] = {}
        self._to_check: set[tuple[str, int]] = set()
        self._checked: set[tuple[str, int]] = set()
        self._leader_commit: dict[str, int] = {}
        self._durable_checked: dict[str, int] = {}
        """node -> its commit index when last seen (after every step and every Ready)."""
        self.changes: dict[str, int] = {}
        """Membership changes proposed (by kind) and refused: what a run exercised."""

    # -- driving ---------------------------------------------------------------------

    def up(self) -> dict[str, Raft]:
        return {i: n.raft for i, n in self.nodes.items() if n.raft is not None}

    def run_tick(self, chaos: bool) -> None:
        self.now += 1
        for node_id, node in self.nodes.items():
            if node.writing is not None and node.written_at <= self.now:
                self._finish(node_id, node, node.writing)
                self._after_step(node_id)
        for node_id, raft in self.up().items():
            raft.tick()
            self._after_step(node_id)
        self._deliver()
        if chaos:
            self._inject_faults()
        self._restart_due()
        self._client_actions()

    def _deliver(self) -> None:
        while self._net and self._net[0][0] <= self.now:
            *_, msg = heapq.heappop(self._net)
            raft = self.nodes[msg.to].raft
            if raft is None or not self._connected(msg.frm, msg.to):
                continue
            self.trace.append(f"t{self.now} {msg}")
            raft.step(msg)
            self._after_step(msg.to)

    def _send(self, msg: Message) -> None:
        f = self.faults
        if self.rng.random() < f.loss:
            return
        copies = 2 if self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            at = self.now + 1 + self.rng.randint(0, f.max_delay_ticks)
            heapq.heappush(self._net, (at, self.rng.random(), next(self._seq), msg))

    def _connected(self, a: str, b: str) -> bool:
        return self.group.get(a, 0) == self.group.get(b, 0)

    def _after_step(self, node_id: str) -> None:
        node = self.nodes[node_id]
        while node.raft is not None and node.writing is None and node.raft.has_ready():
            rd = node.raft.ready()
            # The commit index this Ready moved, judged before anything of it is written
            # (the node may crash while performing it).
            self._check_commit_durable(node_id, node.raft)
            self._perform(node_id, node, rd)
        self._check(node_id)

    def _perform(self, node_id: str, node: Node, rd: Ready) -> None:
        """Do one Ready in its documented order: what may go before the write, then the
        write, which a slow disk finishes only some ticks later."""
        for msg in rd.early_messages:
            self.checker.observe_sent(msg)
            self._send(msg)
        if rd.early_apply:
            self._apply(node_id, node, rd)
        if self.rng.random() < self.faults.slow_disk:
            node.writing, node.written_at = rd, self.now + self.rng.randint(1, 3)
        else:
            self._finish(node_id, node, rd)

    def _finish(self, node_id: str, node: Node, rd: Ready) -> None:
        """The rest of a Ready, from its write on; maybe crash part-way."""
        node.writing = None
        if node.crash_at_ready == "before_persist":
            self._crash(node_id, "before persisting a Ready")
            return
        node.disk.persist(rd)
        if node.crash_at_ready == "after_persist":
            self._crash(node_id, "after persisting a Ready")
            return
        for msg in rd.messages:
            self.checker.observe_sent(msg)
            self._send(msg)
        if not rd.early_apply:
            self._apply(node_id, node, rd)
        self._check_leader_log(node_id, node)
        self._check_leader_commit(node_id, node)

    def _apply(self, node_id: str, node: Node, rd: Ready) -> None:
        if rd.snapshot is not None:
            node.sm.install(rd.snapshot)
            self.checker.observe_snapshot(node_id, rd.snapshot.index)
            self.checker.observe_state(node_id, node.sm.index, node.sm.digest)
        for e in rd.committed:
            node.sm.apply(e)
            self.checker.observe_applied(node_id, e)
            self.checker.observe_state(node_id, node.sm.index, node.sm.digest)
        for rs in rd.read_states:
            assert rs.ctx in self._reads, f"{node_id} answered unknown or answered read {rs.ctx}"
            need = self._reads.pop(rs.ctx)
            assert rs.index >= need, f"read {rs.ctx} at {rs.index} misses commit {need}"

    # -- checks ----------------------------------------------------------------------

    def _check(self, node_id: str) -> None:
        raft = self.nodes[node_id].raft
        if raft is None:
            return
        assert raft.term >= self._terms.get(node_id, 0), f"{node_id} term went back"
        self._terms[node_id] = raft.term
        node = self.nodes[node_id]
        if node.writing is None or node.writing.early_apply:
            assert raft.applied_index == node.sm.index
        self._check_commit_durable(node_id, raft)
        self._max_commit = max(self._max_commit, raft.commit_index)
        if raft.role is Role.LEADER and node.disk.hard_state.term == raft.term:
            # Only a leader whose term is on its disk: a lone voter elects itself before
            # it wrote its vote, and a crash then undoes an election nobody ever heard
            # of (its first messages wait for that write).
            self.checker.observe_leader(node_id, raft.term)
            if (node_id, raft.term) not in self._checked:
                self._to_check.add((node_id, raft.term))

    def _check_commit_durable(self, node_id: str, raft: Raft) -> None:
        """A leader's commit index, each time it moves, is on the disks of a majority of
        the voters it counts with: those of its configuration. A follower's commit came
        from a leader checked when it moved it."""
        before = self._durable_checked.get(node_id, 0)
        self._durable_checked[node_id] = raft.commit_index
        if raft.role is not Role.LEADER or raft.commit_index == before:
            # Not moved by this leader: one it inherited was judged when it moved, under
            # the configuration of its time (a later change does not undo that).
            return
        term = raft.term_at(raft.commit_index)
        if raft.commit_index == 0 or term is None:
            return  # nothing committed, or compacted: it was checked before
        disks = {voter: self.nodes[voter].disk.durable_log() for voter in raft.voters}
        self.checker.check_commit_durable(node_id, raft.commit_index, term, disks)

    def _check_leader_log(self, node_id: str, node: Node) -> None:
        """Leader completeness, once per (leader, term), as soon as the disk holds the
        leader's whole log (right after a Ready of that leader)."""
        raft = node.raft
        assert raft is not None
        key = (node_id, raft.term)
        if key in self._to_check and raft.role is Role.LEADER:
            snap = node.disk.snapshot
            self.checker.check_leader_log(
                node_id, raft.term, node.disk.entries, snap.index if snap else 0
            )
            self._to_check.discard(key)
            self._checked.add(key)

    def _check_leader_commit(self, node_id: str, node: Node) -> None:
        """Raft §5.4.2: a leader moves its commit index only onto an entry of its term."""
        raft = node.raft
        assert raft is not None
        before = self._leader_commit.get(node_id, 0)
        self._leader_commit[node_id] = raft.commit_index
        if raft.role is Role.LEADER and raft.commit_index > before:
            entry = node.disk.entries.get(raft.commit_index)
            assert entry is not None and entry.term == raft.term, (
                f"{node_id}, leader in term {raft.term}, committed index "
                f"{raft.commit_index} of term {entry.term if entry else '?'}"
            )

    # -- faults ----------------------------------------------------------------------

    def _inject_faults(self) -> None:
        """Partitions and crashes, aimed at the leader half of the time: leader changes
        with entries replicated to only some nodes are where Raft's rules matter."""
        rng, f = self.rng, self.faults
        if f.partitions and rng.random() < f.partition_rate:
            self._partition() if not self.group else self._heal_partition()
        if self.group and self.now >= self.partition_until:
            self._heal_partition()
        if f.crashes and rng.random() < f.crash_rate:
            up = sorted(self.up())
            leaders = [i for i, _ in self.leaders()]
            if up:
                self._arm_crash(rng.choice(leaders if leaders and rng.random() < 0.5 else up))

    def _partition(self) -> None:
        ids = sorted(self.nodes)
        leaders = [i for i, _ in self.leaders()]
        if leaders and self.rng.random() < 0.5:
            alone = set(self.rng.sample(ids, self.rng.randint(0, len(ids) // 2 - 1)))
            alone.add(self.rng.choice(leaders))  # the leader with a minority, or alone
            self.group = {i: int(i in alone) for i in ids}
        else:
            self.group = {i: self.rng.randrange(3) for i in ids}
        self.partition_until = self.now + self.rng.randint(5, 60)
        self.trace.append(f"t{self.now} partition {self.group}")

    def _heal_partition(self) -> None:
        self.group = {}
        self.trace.append(f"t{self.now} heal partition")

    def _arm_crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        mode = self.rng.choice(["now", "before_persist", "after_persist"])
        if mode == "now":
            self._crash(node_id, "between steps")
        else:
            node.crash_at_ready = mode

    def _crash(self, node_id: str, when: str) -> None:
        node = self.nodes[node_id]
        node.raft = None
        node.writing = None
        node.down_until = self.now + self.rng.randint(1, 30)
        self.trace.append(f"t{self.now} crash {node_id} {when}")

    def _restart_due(self, force: bool = False) -> None:
        for node_id, node in self.nodes.items():
            if node.raft is None and (force or self.now >= node.down_until):
                node.start(self.rng.random())
                snap = node.disk.snapshot
                self.checker.observe_snapshot(node_id, snap.index if snap else 0)
                self._terms.pop(node_id, None)
                self._durable_checked.pop(node_id, None)
                self.trace.append(f"t{self.now} restart {node_id}")
                self._after_step(node_id)

    def heal(self) -> None:
        self.faults = Faults(
            max_delay_ticks=min(self.faults.max_delay_ticks, 2),
            slow_disk=self.faults.slow_disk,
            compact_every_entries=self.faults.compact_every_entries,
        )
        self._heal_partition()
        for node in self.nodes.values():
            node.crash_at_ready = None
        self._restart_due(force=True)

    # -- clients ---------------------------------------------------------------------

    def leaders(self) -> list[tuple[str, Raft]]:
        return sorted((i, r) for i, r in self.up().items() if r.role is Role.LEADER)

    def propose(self, node_id: str, raft: Raft, data: bytes) -> int:
        index = raft.propose(data)
        self._after_step(node_id)
        return index

    def _client_actions(self) -> None:
        rng = self.rng
        every = self.faults.compact_every_entries
        for node_id, node in self.nodes.items():
            snap = node.disk.snapshot
            if every and node.raft and node.sm.index - (snap.index if snap else 0) >= every:
                self._compact(node_id)
        leaders = self.leaders()
        if not leaders:
            return
        node_id, raft = rng.choice(leaders)
        if rng.random() < 0.3:
            size = rng.choice([1, 1, 1, 60])
            self.propose(node_id, raft, f"p{next(self._proposals)}".encode().ljust(size))
        for reader_id, reader in leaders:  # stale leaders too: they must not answer
            if rng.random() < 0.1:
                ctx = next(self._seq)
                self._reads[ctx] = self._max_commit
                reader.read_index(ctx)
                self._after_step(reader_id)
        if rng.random() < 0.05:
            self._compact(rng.choice(sorted(self.up())))
        if rng.random() < 0.01:
            json.dumps(raft.status())
        # No draw without membership changes: the seeds of the plain runs keep their
        # schedules.
        if self.faults.membership_rate and rng.random() < self.faults.membership_rate:
            self._change_membership(node_id, raft)

    def _compact(self, node_id: str) -> None:
        node = self.nodes[node_id]
        assert node.raft is not None
        snap_index = node.disk.snapshot.index if node.disk.snapshot else 0
        if node.sm.index - snap_index < 5 or node.writing is not None:
            return  # the driver compacts between Readies, not while one is written
        snap = node.raft.compact(node.sm.index, node.sm.digest)
        assert snap is not None and (snap.index, snap.term) == (node.sm.index, node.sm.term)
        node.disk.save_snapshot(snap)
        self._after_step(node_id)

    # -- membership ------------------------------------------------------------------

    def _change_membership(self, node_id: str, raft: Raft) -> None:
        kind, new = self._pick_change(raft.membership)
        try:
            index = raft.propose_membership(new.voters, new.learners)
        except MembershipChangeRefused as refused:
            if kind == "two voters" and not self.allow_two_voters:
                assert not refused.retryable, f"{kind} refused as retryable: {refused}"
            self.changes[f"refused {kind}"] = self.changes.get(f"refused {kind}", 0) + 1
            return
        assert kind != "two voters" or self.allow_two_voters, f"{kind} was accepted"
        self.changes[kind] = self.changes.get(kind, 0) + 1
        self.trace.append(f"t{self.now} {node_id} proposes {kind} at {index}: {new}")
        if not self.group and self.rng.random() < self.faults.split_on_change:
            side = {node_id} | {i for i in sorted(self.nodes) if self.rng.random() < 0.5}
            self.group = {i: int(i not in side) for i in self.nodes}
            self.partition_until = self.now + self.rng.randint(5, 60)
            self.trace.append(f"t{self.now} partition {self.group}")
        self._after_step(node_id)

    allow_two_voters = False
    """Set by the mutation test that breaks the one-voter rule."""
    two_voter_weight = 0.5
    """How often a change of two voters is asked for, against 1 for most other kinds."""

    def committed_changes(self) -> list[tuple[int, Membership]]:
        """The configurations that some node applied, by index."""
        out = []
        for index in range(1, self.checker.committed_index + 1):
            entry = self.checker.committed_entry(index)
            if entry is not None and entry.kind is EntryKind.CONFIG:
                out.append((index, membership.decode(entry.data)))
        return out

    def _pick_change(self, m: Membership) -> tuple[str, Membership]:
        """A change of ``m``: mostly one the rules allow, sometimes two voters at once.
        A crashed voter is the first to go (the first step of replacing it); a learner
        is promoted more often than anything else (it is often refused: not caught up)."""
        rng = self.rng
        voters, learners = list(m.voters), list(m.learners)
        outside = sorted(set(self.nodes) - m.members)
        dead = [v for v in voters if self.nodes[v].raft is None]
        options: list[tuple[str, list[str], list[str]]] = []
        weights: list[float] = []

        def offer(kind: str, v: list[str], lr: list[str], weight: float = 1.0) -> None:
            options.append((kind, v, lr))
            weights.append(weight)

        if outside:
            offer("add learner", voters, [*learners, rng.choice(outside)])
        if learners and len(voters) < 5:
            promoted = rng.choice(learners)
            offer("promote", [*voters, promoted], _without(learners, promoted), 3.0)
        if learners:
            offer("drop learner", voters, _without(learners, rng.choice(learners)), 0.5)
        if len(voters) > 1:
            gone, what = rng.choice(voters), "voter"
            if dead and rng.random() < 0.7:
                gone, what = rng.choice(dead), "dead voter"
                options.clear()  # replacing a dead voter: remove it first
                weights.clear()
            offer(f"remove {what}", _without(voters, gone), learners)
            offer(f"demote {what}", _without(voters, gone), [*learners, gone])
        two = self._two_voter_change(voters, learners)
        if two is not None:
            offer(*two, weight=self.two_voter_weight)
        if not options:
            return "none", m
        kind, v, lr = rng.choices(options, weights)[0]
        return kind, Membership(tuple(v), tuple(lr))

    def _two_voter_change(
        self, voters: list[str], learners: list[str]
    ) -> tuple[str, list[str], list[str]] | None:
        rng = self.rng
        if len(learners) >= 2:
            a, b = rng.sample(learners, 2)
            return "two voters", [*voters, a, b], [x for x in learners if x not in (a, b)]
        if len(voters) >= 3:
            a, b = rng.sample(voters, 2)
            return "two voters", [x for x in voters if x not in (a, b)], [*learners, a, b]
        if learners and len(voters) >= 2:
            gone, added = rng.choice(voters), rng.choice(learners)
            return "two voters", [*_without(voters, gone), added], _without(learners, added)
        return None

    # -- progress --------------------------------------------------------------------

    def await_progress(self, bound_ticks: int, everywhere: bool = True) -> None:
        """Within ``bound_ticks`` a leader commits a fresh proposal (and, if
        ``everywhere``, every node applies it)."""
        probe: tuple[str, int, int] | None = None
        data = b"probe-%d" % self.now
        for _ in range(bound_ticks):
            self.run_tick(chaos=False)
            leaders = self.leaders()
            if probe is not None and not any(probe[:2] == (i, r.term) for i, r in leaders):
                probe = None  # that leader is gone; propose again to the next one
            if probe is None and leaders:
                node_id, raft = leaders[-1]
                probe = (node_id, raft.term, self.propose(node_id, raft, data))
            if probe is not None and self._applied(probe[2], data, everywhere):
                return
        raise AssertionError(f"no progress within {bound_ticks} ticks after healing")

    def _applied(self, index: int, data: bytes, everywhere: bool) -> bool:
        """``everywhere``: on every member of the configuration in force (a node the
        cluster removed gets no more entries)."""
        entry = self.checker.committed_entry(index)
        if entry is None or entry.data != data:
            return False
        leaders = self.leaders()
        members = leaders[-1][1].membership.members if leaders else frozenset(self.nodes)
        return not everywhere or all(self.nodes[i].sm.index >= index for i in members)


def _without(ids: list[str], gone: str) -> list[str]:
    return [i for i in ids if i != gone]


def _with_id(cfg: RaftConfig, node_id: str) -> RaftConfig:
    fields = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    return RaftConfig(**{**fields, "id": node_id})


def _replay_note(test: str, seed: int, cluster: Cluster | None) -> str:
    trace = "\n  ".join(cluster.trace) if cluster else ""
    return (
        f"seed {seed} failed at tick {cluster.now if cluster else 0}\n"
        f"replay: RAFT_SEED={seed} .venv/bin/python -m pytest "
        f"tests/property/test_raft_random.py -k {test}\n"
        f"last events:\n  {trace}"
    )


def _chaos_faults(rng: random.Random) -> Faults:
    return Faults(
        loss=rng.choice([0.0, 0.05, 0.2]),
        duplicate=rng.choice([0.0, 0.05]),
        max_delay_ticks=rng.choice([0, 1, 3, 8]),
        partitions=True,
        partition_rate=rng.choice([0.01, 0.03, 0.06]),
        crashes=True,
        crash_rate=rng.choice([0.005, 0.02, 0.04]),
        slow_disk=rng.choice([0.0, 0.3, 0.8]),
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_random_cluster_is_safe_and_recovers(seed: int) -> None:
    shape = random.Random(seed)
    voters = shape.choice([3, 5])
    learner = shape.random() < 0.5
    cluster: Cluster | None = None
    try:
        cluster = Cluster(seed, _chaos_faults(shape), voters, learner)
        for _ in range(CHAOS_TICKS):
            cluster.run_tick(chaos=True)
        cluster.heal()
        cluster.await_progress(HEAL_BOUND_TICKS)
    except Exception as e:
        raise AssertionError(_replay_note("safe_and_recovers", seed, cluster)) from e


def _membership_run(seed: int, **overrides: float) -> Cluster:
    """Chaos with membership changes, then healing and progress (see the docstring);
    ``overrides`` replace fields of the seed's ``Faults``."""
    shape = random.Random(f"membership-{seed}")
    voters = shape.choice([1, 3, 3, 5])
    faults = dataclasses.replace(
        _chaos_faults(shape),
        membership_rate=shape.choice([0.05, 0.1, 0.2]),
        split_on_change=shape.choice([0.0, 0.2, 0.5]),
        compact_every_entries=64,
    )
    faults = dataclasses.replace(faults, **overrides)
    return Cluster(seed, faults, voters, shape.random() < 0.5, spares=shape.choice([1, 2]))


def _run_chaos_then_heal(cluster: Cluster) -> None:
    for _ in range(CHAOS_TICKS):
        cluster.run_tick(chaos=True)
    cluster.heal()
    cluster.await_progress(HEAL_BOUND_TICKS)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_membership_changes_are_safe_and_recover(seed: int) -> None:
    cluster: Cluster | None = None
    try:
        cluster = _membership_run(seed)
        _run_chaos_then_heal(cluster)
    except Exception as e:
        raise AssertionError(_replay_note("membership_changes_are_safe", seed, cluster)) from e


def test_random_membership_runs_exercise_every_kind_of_change() -> None:
    """What the seeds above do, summed over the first few: every kind of change is
    proposed and committed somewhere, dead voters are replaced, and two-voter changes
    are asked for (and refused)."""
    totals: dict[str, int] = {}
    committed = 0
    for seed in range(20):
        cluster = _membership_run(seed)
        _run_chaos_then_heal(cluster)
        for kind, n in cluster.changes.items():
            totals[kind] = totals.get(kind, 0) + n
        committed += len(cluster.committed_changes())
    kinds = {"add learner", "promote", "drop learner", "remove voter", "demote voter"}
    kinds |= {"remove dead voter", "demote dead voter", "refused two voters"}
    assert kinds <= set(totals), totals
    assert "two voters" not in totals, "a change of two voters was accepted"
    assert committed >= 50, (committed, totals)


@pytest.mark.parametrize("seed", SEEDS)
def test_liveness_under_loss(seed: int) -> None:
    """10% loss, no partitions or crashes: a leader is elected and commits in a bound."""
    shape = random.Random(-seed - 1)
    cluster: Cluster | None = None
    try:
        faults = Faults(loss=0.1, max_delay_ticks=shape.choice([0, 2]))
        cluster = Cluster(seed, faults, shape.choice([3, 5]), shape.random() < 0.5)
        cluster.await_progress(LOSS_BOUND_TICKS, everywhere=False)
    except Exception as e:
        raise AssertionError(_replay_note("liveness_under_loss", seed, cluster)) from e


def _counting_unwritten_entries(self: Raft) -> None:
    """The bug: the leader counts its own log up to what it handed out for writing."""
    tracker, log = self._tracker, self._log
    assert tracker is not None
    index = tracker.committed_index(log.stable)
    if index > log.commit and log.term_at(index) == self._term:
        log.commit_to(index)
        self._commit_dirty = True


@pytest.mark.parametrize("mutated", [False, True], ids=["correct", "mutated"])
def test_a_leader_counting_entries_it_has_not_written_is_caught(
    mutated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three voters whose disks are slow half of the time, no other fault. A leader that
    sends its appends before its own write, and counts its copy before the write ends,
    commits an entry that only one follower holds on disk: the commit-durability check
    fires. The same run without the bug is clean."""
    seed = 1
    if mutated:
        monkeypatch.setattr(Raft, "_maybe_commit", _counting_unwritten_entries)
    cluster: Cluster | None = None
    try:
        cluster = Cluster(seed, Faults(slow_disk=0.5), voters=3, learner=False)
        if mutated:
            with pytest.raises(SafetyViolation, match="commit durability"):
                for _ in range(CHAOS_TICKS):
                    cluster.run_tick(chaos=False)
        else:
            for _ in range(CHAOS_TICKS):
                cluster.run_tick(chaos=False)
            cluster.await_progress(HEAL_BOUND_TICKS)
    except Exception as e:
        raise AssertionError(_replay_note("not_written", seed, cluster)) from e


def _changing_any_number_of_voters(
    current: Membership, new: Membership, caught_up: Callable[[str], bool]
) -> None:
    """The bug: ``membership.check_change`` without its one-voter rule."""
    if membership.problem(new) is not None or new.same_as(current):
        raise MembershipChangeRefused("malformed or unchanged")
    for voter in set(new.voters) - set(current.voters):
        if voter not in current.learners or not caught_up(voter):
            raise MembershipChangeRefused("not a caught-up learner", retryable=True)


MUTATION_SEARCH_SEEDS = 300
"""Seeds tried until one breaks a safety property (the first does at about 60)."""
MUTATION_CLEAN_SEEDS = 80
"""The same profile with the rule: these seeds run clean."""


def _mutation_profile(seed: int) -> Cluster:
    """Membership changes as in the seeds above, asked for more often, two voters at a
    time more often still, and mostly followed by a split of the cluster."""
    cluster = _membership_run(seed, membership_rate=0.2, split_on_change=0.6)
    cluster.two_voter_weight = 5.0
    return cluster


@pytest.mark.parametrize("mutated", [False, True], ids=["correct", "mutated"])
def test_changing_two_voters_at_once_is_caught(
    mutated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allow a change of two voters at once and some seed ends with two majorities that
    do not overlap, one on each side of a split: the safety checkers fire (two leaders
    in a term, divergent applied entries, a leader missing a committed entry). The same
    seeds with the rule run clean and recover."""
    if mutated:
        monkeypatch.setattr(membership, "check_change", _changing_any_number_of_voters)
        monkeypatch.setattr(Cluster, "allow_two_voters", True)
    caught: list[tuple[int, str]] = []
    for seed in range(MUTATION_SEARCH_SEEDS if mutated else MUTATION_CLEAN_SEEDS):
        cluster = _mutation_profile(seed)
        try:
            _run_chaos_then_heal(cluster)
        except SafetyViolation as e:
            caught.append((seed, str(e)))
            break
        except Exception as e:
            raise AssertionError(_replay_note("two_voters_at_once", seed, cluster)) from e
    if mutated:
        assert caught, f"no seed of {MUTATION_SEARCH_SEEDS} broke a safety property"
    else:
        assert not caught, caught
