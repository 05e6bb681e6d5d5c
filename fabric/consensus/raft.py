"""Raft consensus as a sans-I/O state machine, in the style of etcd-io/raft.

Theory of operation
-------------------
``Raft`` never touches a clock, a socket or a disk. The driver feeds it three inputs
and performs what it hands back:

* ``tick()`` every tick of the driver's clock: elections and heartbeats are counted in
  ticks;
* ``step(msg)`` for every message from a peer;
* ``propose(data)`` / ``read_index(ctx)`` from clients of the leader, and
  ``propose_membership(voters, learners)`` from its operator;

and, whenever ``has_ready()``, ``ready()`` hands out a ``Ready``: state to persist, then
messages to send, then committed entries to apply, then reads to answer (in that order,
see ``types.Ready``). Messages produced while stepping are only released through
``ready()``, so nothing leaves the node before the state it depends on is durable.

Pipelining: what does not depend on this Ready's write may overlap it. A leader's
appends and heartbeats go out first (``early_messages``) whenever its term and vote are
durable already, so its own fsync runs while followers receive and fsync the same
entries; committed entries that earlier Readies persisted are applied first
(``early_apply``), so clients hear back while the next batch is written. Proposals that
arrive while a Ready is performed wait in the log and leave together in the next one
(group commit: one fsync per batch on every node).

Roles (``Role``) and their transitions::

    FOLLOWER --election timeout--> PRE_CANDIDATE --majority pre-votes--> CANDIDATE
        ^                               |  (term unchanged)                  | term+1,
        |                               |                                    | votes self
        +---- lost / saw a leader ------+-------- majority votes ------> LEADER
        +---- higher term; check-quorum failed (leader heard from no majority); -+
              its own removal committed
    LEARNER: not a voter of the configuration in force (a learner, or a node outside
    it): replicates like a follower, never times out. LEARNER <-> FOLLOWER as a change
    that promotes or demotes this node enters (or leaves) its log; a voter removed by a
    change stays FOLLOWER until it knows the change is committed.

Pre-vote (§9.6 of Ongaro's thesis) makes a node ask "would you vote for me at term+1?"
before it bumps its term; a voter says no while it heard from a leader within
``election_ticks`` (the *lease*), so a node rejoining after a partition cannot depose a
healthy leader. Check-quorum makes a leader that heard from no majority of voters within
``election_ticks`` step down, so a partitioned leader does not linger.

Replication: the leader keeps a ``Progress`` per peer (see ``progress.py`` for its
probe/replicate/snapshot flow control). Appends carry up to ``max_append_entries`` /
``max_append_bytes``; a follower that lags behind the leader's compacted log gets a
``SnapshotRequest``. Appends are produced in ``ready()`` (so proposals made between two
``ready()`` calls travel in one batch). Heartbeats are empty appends anchored at the
peer's ``match`` index, so they never fail for a healthy follower; they carry
``commit = min(commit, match)``.

Learners get committed entries only (their acks count for nothing). With
``lazy_learners`` they get them with their heartbeat (every ``learner_heartbeat_every``-th),
one append for whatever committed since, instead of one append and one answer per entry
per learner; ``catch_up(peer, index)`` sends one the log up to ``index`` at once (the
driver calls it when a learner waits for that index: a read, its own proposal), a learner
to promote is caught up the same way, and a new leader sends every learner its first
entry, so each learns at once whom to ask.

A rejected append answers ``hint_index`` (where to probe next) and echoes the rejected
``prev_index`` in ``match_index`` so the leader can tell a stale rejection from a fresh
one.

Commit (§5.4.2): the leader commits the highest index held by a majority of voters only
if that entry is of its own term; a new leader appends a NOOP to get there. The leader
counts its own log only up to what it knows durable (``_durable``): the entries handed
out by Readies before the last one, since calling ``ready()`` again is the driver's word
that the previous Ready was persisted. Followers' acknowledgements may arrive while the
leader still writes the same entries; they commit them only with a majority of
followers, or at the next ``ready()``.

Read index (§6.4 of the thesis): a leader that committed an entry of its term records
``(read_seq, ctx, commit)`` and sends heartbeats tagged with ``read_seq``; once a
majority of voters echoed a ``read_seq`` at least that new, the read is answered with a
``ReadState``. Reads received before that first commit wait for it; reads pending when
leadership is lost are dropped (the driver times them out).

Membership (§4 of the thesis; the rules and their reasons are in ``membership.py``):
the configuration is the ``RaftConfig``'s until the log says otherwise. A change is a
``CONFIG`` entry holding the whole new configuration, at most one voter away from the
current one; a leader appends one only when the previous one is committed and it has
committed an entry of its own term, and promotes only a learner that has caught up.

* Each node puts the latest configuration in its log in force at once, committed or not
  (``_sync_membership`` after every append, truncation or snapshot); a truncated change
  falls back to the one before. Quorums (commit, votes, check-quorum, read index) and
  the leader's ``Progress`` per peer follow it.
* Who campaigns: a voter, or a voter removed by a change not yet committed (it may be
  needed to elect the leader that commits it; it does not count its own vote, §4.2.2).
* Messages are taken from any sender (a leader may be newer than our configuration; a
  learner may be a voter by a change it has not received, so it answers vote
  requests), but only members' answers are counted.
* A leader outside its own configuration leads without counting itself until that
  change commits, then steps down; removed peers hear from the leader until then, so
  they learn they are out.
* A snapshot records the configuration in force at its index, so a restart or a
  follower installing it knows it; one written before this existed means the
  ``RaftConfig``'s. Committed ``CONFIG`` entries reach the driver in
  ``Ready.committed``.

Bugs assert (log matching, commit never decreasing, terms never going back); a peer's
malformed or stale message is dropped (an append carrying a configuration that does
not decode, a snapshot with a malformed one); misuse by the driver raises
``ValueError`` (``MembershipChangeRefused`` for a change that may not be made, now or
ever) or ``NotLeader``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from typing import assert_never

from fabric.consensus import membership
from fabric.consensus.log import RaftLog
from fabric.consensus.progress import Progress, ProgressTracker, quorum
from fabric.consensus.types import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    Membership,
    MembershipChangeRefused,
    Message,
    NotLeader,
    RaftConfig,
    ReadState,
    Ready,
    Restored,
    Role,
    Snapshot,
    SnapshotRequest,
    VoteRequest,
    VoteResponse,
)

_FRESH = Restored()
"""A node that never persisted anything."""


def _check_config(cfg: RaftConfig) -> None:
    # A node outside its starting configuration is allowed: a server about to be added
    # waits, without campaigning, until the log tells it that it belongs.
    problem = membership.problem(Membership(cfg.voters, cfg.learners))
    if problem is not None:
        raise ValueError(f"starting configuration: {problem}")
    if not cfg.id:
        raise ValueError("a node needs an id")
    if not 0 < cfg.heartbeat_ticks < cfg.election_ticks:
        raise ValueError("need 0 < heartbeat_ticks < election_ticks")
    if cfg.learner_heartbeat_every < 1:
        raise ValueError("learner_heartbeat_every must be at least 1")
    if min(cfg.max_append_entries, cfg.max_append_bytes, cfg.max_inflight_appends) < 1:
        raise ValueError("append limits must be positive")


class Raft:
    def __init__(self, config: RaftConfig, rng: random.Random, restored: Restored = _FRESH) -> None:
        _check_config(config)
        self._cfg = config
        self._rng = rng
        self._abstain = config.abstain
        self._log = RaftLog(restored, Membership(config.voters, config.learners))
        self._conf = self._log.membership
        """The configuration in force: the latest in our log (see ``_sync_membership``)."""
        self._term = restored.hard_state.term
        self._vote = restored.hard_state.vote
        self._handed_state = restored.hard_state
        """The hard state the driver last persisted."""
        self._durable = self._log.stable
        """Our log is durable up to here: what Readies before the last one handed out."""
        self._role = self._follower_role()
        self._leader: str | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._heartbeats = 0
        """Heartbeats this leader sent (every ``learner_heartbeat_every``-th goes to all)."""
        self._timeout = self._random_timeout()
        self._votes: dict[str, bool] = {}
        self._tracker: ProgressTracker | None = None
        self._commit_dirty = False
        """The leader's commit moved; followers hear it at the next ``ready()``."""
        self._scan_all = True
        self._touched: set[str] = set()
        self._scanned_at = (0, 0)
        """What ``_can_replicate`` may skip: since the (last, commit) it last saw every
        peer at, only ``_touched`` ones changed, unless ``_scan_all``. A leader is asked
        after every message, and a big cluster's learners ack every entry."""
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._read_seq = 0
        self._reads: deque[tuple[int, int, int]] = deque()
        """Pending reads as (read_seq, ctx, index), oldest first."""
        self._reads_waiting: list[int] = []
        """Reads that arrived before this leader committed an entry of its term."""

    # -- read-only view --------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._cfg.id

    @property
    def term(self) -> int:
        return self._term

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leader(self) -> str | None:
        return self._leader

    @property
    def commit_index(self) -> int:
        return self._log.commit

    @property
    def applied_index(self) -> int:
        return self._log.applied

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def voters(self) -> tuple[str, ...]:
        """The voters of the configuration in force (the latest in our log)."""
        return self._conf.voters

    @property
    def learners(self) -> tuple[str, ...]:
        return self._conf.learners

    @property
    def membership(self) -> Membership:
        """The configuration in force: the latest in our log, committed or not."""
        return self._conf

    @property
    def membership_index(self) -> int:
        """The index of the entry that put ``membership`` in force; once that entry is
        compacted away, the oldest index still in the log (0: the starting configuration).
        The change is committed when this is at most ``commit_index``."""
        return self._log.membership_index

    def membership_at(self, index: int) -> Membership:
        """The configuration in force at ``index``, for a snapshot taken there (from the
        oldest index still in the log up to ``last_index``)."""
        if not self._log.offset <= index <= self._log.last_index:
            raise ValueError(f"no configuration known at index {index}")
        return self._log.membership_at(index)

    def term_at(self, index: int) -> int | None:
        """The term of our entry at ``index``, or None when it is compacted or beyond."""
        return self._log.term_at(index)

    @property
    def abstaining(self) -> bool:
        """Started without its durable state, it waits to be re-added (``abstain``)."""
        return self._abstain

    def status(self) -> dict[str, object]:
        return {
            "id": self.id,
            "term": self._term,
            "role": self._role.name.lower(),
            "leader": self._leader,
            "vote": self._vote,
            "commit": self._log.commit,
            "applied": self._log.applied,
            "last_index": self._log.last_index,
            "snapshot_index": self._log.snapshot_index,
            "voters": list(self._conf.voters),
            "learners": list(self._conf.learners),
            "membership_index": self._log.membership_index,
            "abstaining": self._abstain,
            "peers": self._tracker.status() if self._tracker else {},
        }

    # -- inputs ----------------------------------------------------------------------

    def tick(self, n: int = 1) -> None:
        """``n`` ticks. A learner takes them in one step: it never campaigns, so a tick
        only ages its view of the leader (a big cluster's learners tick in batches)."""
        if self._role is Role.LEARNER:
            self._election_elapsed += n
            return
        for _ in range(n):
            if self._role is Role.LEADER:
                self._tick_leader()
            else:
                self._tick_election()

    def step(self, msg: Message) -> None:
        """Handle one message from a peer; wrong, stale or malformed ones are dropped."""
        if not self._admissible(msg) or not self._accept_term(msg):
            return
        match msg:
            case VoteRequest():
                self._on_vote_request(msg)
            case VoteResponse():
                self._on_vote_response(msg)
            case AppendRequest():
                self._on_append(msg)
            case AppendResponse():
                self._on_append_response(msg)
            case SnapshotRequest():
                self._on_snapshot(msg)
            case _:
                assert_never(msg)

    def propose(self, data: bytes) -> int:
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        index = self._log.last_index + 1
        self._log.append(Entry(index, self._term, EntryKind.COMMAND, data))
        return index

    def propose_membership(self, voters: tuple[str, ...], learners: tuple[str, ...] = ()) -> int:
        """Append a change to the configuration ``(voters, learners)`` (the whole new one)
        and return its index. It is in force at once; the driver sees it committed as a
        ``CONFIG`` entry in ``Ready.committed``. Raises ``NotLeader``, or
        ``MembershipChangeRefused`` for a change that breaks a rule of ``membership.py``
        or that must wait (``retryable``)."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        new = Membership(tuple(voters), tuple(learners))
        for peer in new.voters:
            self.catch_up(peer, self._log.commit)  # a learner to promote must catch up
        membership.check_change(self._conf, new, self._caught_up)
        if self._log.membership_index > self._log.commit:
            raise MembershipChangeRefused(
                "an earlier membership change is not committed yet", retryable=True
            )
        if self._log.term_at(self._log.commit) != self._term:
            raise MembershipChangeRefused(
                "the leader has not committed an entry of its term yet", retryable=True
            )
        index = self._log.last_index + 1
        self._log.append(Entry(index, self._term, EntryKind.CONFIG, membership.encode(new)))
        self._sync_membership()
        return index

    def _caught_up(self, peer: str) -> bool:
        assert self._tracker is not None
        pr = self._tracker.peers.get(peer)
        return pr is not None and pr.match >= self._log.commit

    def catch_up(self, peer: str, index: int) -> None:
        """Send ``peer`` the log up to ``index`` (as it commits) now, not with its next
        heartbeat: a lazy learner about to read at ``index``, or waiting to apply its own
        proposal there. Nothing for any other peer, or on a follower."""
        if self._tracker is None:
            return
        pr = self._tracker.peers.get(peer)
        if pr is not None and pr.lazy and index > pr.wanted:
            pr.wanted = index
            self._touched.add(peer)

    def read_index(self, ctx: int) -> None:
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if self._log.term_at(self._log.commit) == self._term:
            self._start_reads([ctx])
        else:
            self._reads_waiting.append(ctx)

    def compact(self, index: int, data: bytes) -> Snapshot | None:
        """The driver's state machine, applied through ``index``, is ``data``: drop the
        log up to there. Returns the snapshot Raft now serves (with the configuration in
        force at ``index``: the driver persists exactly this), or None when ``index`` is
        not past the current snapshot."""
        if index > self._log.applied:
            raise ValueError(f"compact({index}) beyond applied index {self._log.applied}")
        if index <= self._log.snapshot_index:
            return None
        term = self._log.term_at(index)
        assert term is not None, f"compact({index}): entry already gone"
        snap = Snapshot(index, term, data, self._log.membership_at(index))
        self._log.compact(snap, self._compaction_floor(index))
        return snap

    def _compaction_floor(self, index: int) -> int:
        """Keep the entries the slowest peer still needs when that is cheap (at most one
        append batch); otherwise that peer will get the snapshot."""
        if self._tracker is None:
            return index
        slowest = min((pr.match for _, pr in self._tracker), default=index)
        return slowest if index - slowest <= self._cfg.max_append_entries else index

    # -- output ----------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self._read_states
            or self._log.has_pending()
            or self._hard_state() != self._handed_state
            or (self._tracker is not None and self._leader_has_ready())
        )

    def _leader_has_ready(self) -> bool:
        # A Ready whose write completed may let the leader's own log count towards commit.
        return self._commit_dirty or self._durable < self._log.stable or self._can_replicate()

    def ready(self) -> Ready:
        self._durable = self._log.stable  # the driver persisted every earlier Ready
        leader = self._role is Role.LEADER
        if leader:
            self._maybe_commit()
        rd = Ready(snapshot=self._log.take_snapshot(), entries=self._log.take_unstable())
        if leader:
            self._replicate()
            self._after_change_committed()
        rd.committed = self._log.take_committed()
        rd.early_apply = rd.snapshot is None and (
            not rd.committed or rd.committed[-1].index <= self._durable
        )
        hard_state, handed = self._hard_state(), self._handed_state
        same_term = (hard_state.term, hard_state.vote) == (handed.term, handed.vote)
        rd.must_sync = bool(rd.entries) or rd.snapshot is not None or not same_term
        if hard_state != handed:
            rd.hard_state = self._handed_state = hard_state
        msgs, self._msgs = self._msgs, []
        if leader and same_term:
            rd.early_messages = [m for m in msgs if isinstance(m, AppendRequest | SnapshotRequest)]
            msgs = [m for m in msgs if not isinstance(m, AppendRequest | SnapshotRequest)]
        rd.messages = msgs
        rd.read_states, self._read_states = self._read_states, []
        return rd

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._vote, self._log.commit)

    def _send(self, msg: Message) -> None:
        self._msgs.append(msg)

    # -- roles -----------------------------------------------------------------------

    def _follower_role(self) -> Role:
        return Role.FOLLOWER if self._may_campaign() else Role.LEARNER

    def _may_campaign(self) -> bool:
        """A voter, or a voter just removed by a change that is not committed yet: until
        it is, we may be needed to elect the leader that commits it (§4.2.2 of the
        thesis; ``_record_vote`` does not count our own vote then). Never while
        abstaining (``RaftConfig.abstain``)."""
        if self._abstain:
            return False
        if self.id in self._conf.voters:
            return True
        changed_at = self._log.membership_index
        if changed_at <= self._log.commit:
            return False
        return self.id in self._log.membership_at(changed_at - 1).voters

    def _sync_membership(self) -> None:
        """Put the latest configuration in our log in force, and the roles that follow
        from it and from whether it is committed (call after every change of the log or
        of the commit index: an append, a truncation, a snapshot)."""
        new = self._log.membership
        if self._abstain and self.id not in new.voters:
            self._abstain = False  # out of the voters: added back, it starts afresh
        if new != self._conf:
            old, self._conf = self._conf, new
            if self._tracker is not None:
                # A new peer's first probe carries the change that added it: its answer
                # (or rejection) starts its replication, where an empty heartbeat would
                # not. A removed peer still hears from us until the change is committed,
                # so that it learns it is out and stops campaigning (§4.2.3).
                leaving = old.members - new.members - {self.id}
                self._tracker.reconfigure(new, self._log.membership_index, leaving)
                self._scan_all = True
                self._maybe_commit()  # a smaller quorum may commit at once
        if self._tracker is not None:
            return
        role = self._follower_role()
        if self._role in (Role.PRE_CANDIDATE, Role.CANDIDATE):
            if role is Role.LEARNER:
                self._become_follower(self._term, self._leader)
        elif self._role is not role:
            # Promoted (may campaign from now on) or out for good (never again).
            self._reset(role, self._leader)

    def _after_change_committed(self) -> None:
        """Once the latest change is committed (and the heartbeats carrying that went
        out), the leader forgets removed peers, and steps down if it is one of them
        (§4.2.2: a leader outside the configuration manages it only until then)."""
        assert self._tracker is not None
        if self._log.commit < self._log.membership_index:
            return
        if self._tracker.leaving:
            self._tracker.reconfigure(self._conf, self._log.last_index + 1)
            self._scan_all = True
        if self.id not in self._conf.voters:
            self._become_follower(self._term, None)

    def _random_timeout(self) -> int:
        return self._rng.randrange(self._cfg.election_ticks, 2 * self._cfg.election_ticks)

    def _reset(self, role: Role, leader: str | None) -> None:
        self._role = role
        self._leader = leader
        self._election_elapsed = self._heartbeat_elapsed = self._heartbeats = 0
        self._timeout = self._random_timeout()
        self._votes = {}
        self._tracker = None
        self._commit_dirty = False
        self._scan_all = True
        self._touched.clear()
        self._reads.clear()
        self._reads_waiting.clear()

    def _become_follower(self, term: int, leader: str | None) -> None:
        assert term >= self._term, f"{self.id}: term would go back {self._term} -> {term}"
        if term > self._term:
            self._term, self._vote = term, None
        self._reset(self._follower_role(), leader)

    def _become_pre_candidate(self) -> None:
        self._reset(Role.PRE_CANDIDATE, None)
        self._request_votes(pre_vote=True)

    def _become_candidate(self) -> None:
        self._reset(Role.CANDIDATE, None)
        self._term += 1
        self._vote = self.id
        self._request_votes(pre_vote=False)

    def _become_leader(self) -> None:
        self._reset(Role.LEADER, self.id)
        next_index = self._log.last_index + 1
        self._tracker = ProgressTracker(
            self.id,
            self._conf,
            next_index,
            self._cfg.max_inflight_appends,
            self._cfg.lazy_learners,
        )
        self._log.append(Entry(next_index, self._term, EntryKind.NOOP))
        for _, pr in self._tracker:
            # Every learner hears of the new leader at once (with its first entry): a
            # learner's reads and proposals go to the leader it knows.
            pr.wanted = next_index

    # -- ticks -----------------------------------------------------------------------

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._role is not Role.LEARNER and self._election_elapsed >= self._timeout:
            self._become_pre_candidate()

    def _tick_leader(self) -> None:
        assert self._tracker is not None
        self._election_elapsed += 1
        self._heartbeat_elapsed += 1
        if self._election_elapsed >= self._cfg.election_ticks:
            self._election_elapsed = 0
            if not self._tracker.quorum_active():
                self._become_follower(self._term, None)
                return
        if self._heartbeat_elapsed >= self._cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _broadcast_heartbeat(self) -> None:
        assert self._tracker is not None
        stall_limit = max(2, self._cfg.election_ticks // self._cfg.heartbeat_ticks)
        self._scan_all = True  # a probe unpauses, a stalled peer probes again
        self._heartbeats += 1
        learners_too = self._heartbeats % self._cfg.learner_heartbeat_every == 0
        commit = self._log.commit
        for peer, pr in self._tracker:
            if not (pr.voter or learners_too):
                continue
            pr.heartbeat_tick(stall_limit)
            if pr.lazy and pr.next <= commit and pr.can_send():
                pr.wanted = commit  # its entries go instead, at the next Ready
                continue
            self._send_heartbeat(peer, pr)

    # -- admission and terms ---------------------------------------------------------

    def _admissible(self, msg: Message) -> bool:
        """Addressed to us by another node. The sender is not checked against our
        configuration (§4.1 of the thesis): a leader or a candidate may already be in a
        configuration we have not received (a server being added first hears from a
        leader it does not know; a learner may be promoted without knowing it yet, so it
        answers a candidate that counts it). Answers are counted only from the members
        of our configuration (``_record_vote``, ``_on_append_response``)."""
        return msg.to == self.id and msg.frm != self.id

    def _in_lease(self) -> bool:
        """We heard from a leader within an election timeout (or are the leader)."""
        return self._leader is not None and self._election_elapsed < self._cfg.election_ticks

    def _accept_term(self, msg: Message) -> bool:
        """Apply the term rules common to all messages; False drops the message."""
        if msg.term > self._term:
            return self._on_higher_term(msg)
        if msg.term < self._term:
            self._on_lower_term(msg)
            return False
        return True

    def _on_higher_term(self, msg: Message) -> bool:
        if isinstance(msg, VoteRequest):
            if self._in_lease():
                return False  # a disruptive candidate: we know a live leader
            if msg.pre_vote:
                return True  # a pre-vote never changes our term
        if isinstance(msg, VoteResponse) and msg.pre_vote and msg.granted:
            return True  # granted pre-votes carry the term we would campaign at
        leader = msg.frm if isinstance(msg, AppendRequest | SnapshotRequest) else None
        self._become_follower(msg.term, leader)
        return True

    def _on_lower_term(self, msg: Message) -> None:
        """Tell a stale leader or pre-candidate our term so that it catches up (else a
        node whose term ran ahead could never rejoin: nobody would answer it)."""
        if isinstance(msg, AppendRequest | SnapshotRequest):
            self._send(AppendResponse(self._term, self.id, msg.frm, False, 0))
        elif isinstance(msg, VoteRequest) and msg.pre_vote:
            self._send(VoteResponse(self._term, self.id, msg.frm, False, True))

    # -- elections -------------------------------------------------------------------

    def _request_votes(self, pre_vote: bool) -> None:
        term = self._term + 1 if pre_vote else self._term
        last_index, last_term = self._log.last_index, self._log.last_term
        for peer in self._conf.voters:
            if peer != self.id:
                self._send(VoteRequest(term, self.id, peer, last_index, last_term, pre_vote))
        self._record_vote(self.id, True)

    def _on_vote_request(self, msg: VoteRequest) -> None:
        up_to_date = self._log.is_up_to_date(msg.last_index, msg.last_term)
        if self._abstain:
            granted = False  # we may have acknowledged entries we no longer hold
        elif msg.pre_vote:
            granted = msg.term > self._term and up_to_date
        else:
            free = self._vote == msg.frm or (self._vote is None and self._leader is None)
            granted = free and up_to_date
        if granted and not msg.pre_vote:
            self._vote = msg.frm
            self._election_elapsed = 0
        term = msg.term if granted else self._term
        self._send(VoteResponse(term, self.id, msg.frm, granted, msg.pre_vote))

    def _on_vote_response(self, msg: VoteResponse) -> None:
        expected = Role.PRE_CANDIDATE if msg.pre_vote else Role.CANDIDATE
        if msg.pre_vote and msg.granted and msg.term != self._term + 1:
            return  # granted for another campaign
        if self._role is expected:
            self._record_vote(msg.frm, msg.granted)

    def _record_vote(self, voter: str, granted: bool) -> None:
        voters = self._conf.voters
        if voter not in voters:
            return  # not a voter in our configuration: its answer does not count
        self._votes.setdefault(voter, granted)
        yes = sum(self._votes.values())
        no = len(self._votes) - yes
        needed = quorum(len(voters))
        if yes >= needed:
            if self._role is Role.PRE_CANDIDATE:
                self._become_candidate()
            else:
                self._become_leader()
        elif no > len(voters) - needed:
            self._become_follower(self._term, None)

    # -- follower side of replication ------------------------------------------------

    def _heard_leader(self, msg: AppendRequest | SnapshotRequest) -> bool:
        """A message from the leader of our term; False if we are that term's leader
        ourselves (two leaders in a term: a peer is broken, ignore it)."""
        if self._role is Role.LEADER:
            return False
        if self._role in (Role.PRE_CANDIDATE, Role.CANDIDATE):
            self._become_follower(msg.term, msg.frm)
        self._leader = msg.frm
        self._election_elapsed = 0
        return True

    def _on_append(self, msg: AppendRequest) -> None:
        if not self._heard_leader(msg) or not _well_formed(msg):
            return
        match = self._log.try_append(msg.prev_index, msg.prev_term, msg.entries)
        if match is None:
            hint = self._log.reject_hint(msg.prev_index)
            self._reply(msg, False, msg.prev_index, hint)
            return
        self._log.commit_to(min(msg.commit, match))
        self._sync_membership()
        self._reply(msg, True, match)

    def _on_snapshot(self, msg: SnapshotRequest) -> None:
        snap = msg.snapshot
        if not self._heard_leader(msg) or not 0 <= snap.term <= msg.term:
            return
        if snap.membership is not None and membership.problem(snap.membership) is not None:
            return  # a peer's malformed snapshot
        if snap.index <= self._log.commit:
            self._reply(msg, True, self._log.commit)
            return
        if self._log.matches(snap.index, snap.term):
            self._log.commit_to(snap.index)  # we hold the log already: no restore
        else:
            self._log.restore(snap)
        self._sync_membership()
        self._reply(msg, True, snap.index)

    def _reply(
        self, msg: AppendRequest | SnapshotRequest, ok: bool, index: int, hint: int = 0
    ) -> None:
        read_seq = msg.read_seq if isinstance(msg, AppendRequest) else 0
        self._send(AppendResponse(self._term, self.id, msg.frm, ok, index, hint, read_seq))

    # -- leader side of replication --------------------------------------------------

    def _on_append_response(self, msg: AppendResponse) -> None:
        if self._tracker is None:
            return
        if msg.match_index > self._log.last_index or msg.read_seq > self._read_seq:
            return  # claims more than we ever sent: malformed
        pr = self._tracker.peers.get(msg.frm)
        if pr is None:
            return  # not in our configuration (any more)
        pr.recent_active = True
        pr.read_ack = max(pr.read_ack, msg.read_seq)
        self._touched.add(msg.frm)
        if msg.success:
            if pr.acked(msg.match_index) and pr.voter:
                self._maybe_commit()
            # A peer whose ack came after the commit moved (a learner, a slow voter) was
            # told a commit capped below what it now holds; without this it would wait
            # for the next heartbeat to apply entries the cluster committed long ago.
            if min(self._log.commit, pr.match) > pr.commit_told:
                self._send_heartbeat(msg.frm, pr)
        else:
            pr.rejected(msg.match_index, msg.hint_index)
        self._advance_reads()

    def _maybe_commit(self) -> None:
        assert self._tracker is not None
        index = self._tracker.committed_index(min(self._durable, self._log.stable))
        if index <= self._log.commit or self._log.term_at(index) != self._term:
            return  # §5.4.2: never commit an older term's entry by counting replicas
        first_in_term = self._log.term_at(self._log.commit) != self._term
        self._log.commit_to(index)
        self._commit_dirty = True
        if first_in_term and self._reads_waiting:
            waiting, self._reads_waiting = self._reads_waiting, []
            self._start_reads(waiting)

    def _can_replicate(self) -> bool:
        assert self._tracker is not None
        last, commit = self._log.last_index, self._log.commit
        peers = self._tracker.peers
        looked: Iterable[Progress] = (
            peers.values()
            if self._scan_all or (last, commit) != self._scanned_at
            else [peers[p] for p in self._touched if p in peers]
        )
        if any(pr.next <= _end(pr, last, commit) and pr.can_send() for pr in looked):
            return True
        self._replicated(last, commit)
        return False

    def _replicated(self, last: int, commit: int) -> None:
        """No peer can take more of the log ``last`` with ``commit`` than it has."""
        self._scan_all = False
        self._touched.clear()
        self._scanned_at = (last, commit)

    def _replicate(self) -> None:
        """Send every peer what it can take now; peers with nothing new hear a moved
        commit index through a heartbeat.

        A learner gets committed entries only: its ack counts for nothing, so sending
        it an entry before the commit would cost a second message to tell it the
        commit. Sent after, one append carries both (a promoted learner is a voter as
        soon as the change is in the log, and from then gets every entry). A lazy
        learner gets them up to what it asked for (``catch_up``); the rest waits for
        its heartbeat."""
        assert self._tracker is not None
        last, commit = self._log.last_index, self._log.commit
        for peer, pr in self._tracker:
            sent = False
            end = _end(pr, last, commit)
            while pr.can_send() and pr.next <= end:
                self._send_append(peer, pr, end)
                sent = True
            if self._commit_dirty and not sent and not pr.lazy:
                self._send_heartbeat(peer, pr)
        self._commit_dirty = False
        self._replicated(last, commit)

    def _send_append(self, peer: str, pr: Progress, end: int) -> None:
        prev = pr.next - 1
        prev_term = self._log.term_at(prev)
        if prev_term is None:
            self._send_snapshot(peer, pr)
            return
        cfg = self._cfg
        count = min(cfg.max_append_entries, end - prev)
        entries = self._log.slice(pr.next, count, cfg.max_append_bytes)
        msg = AppendRequest(
            self._term, self.id, peer, prev, prev_term, entries, self._log.commit, self._read_seq
        )
        self._send(msg)
        pr.commit_told = max(pr.commit_told, min(self._log.commit, entries[-1].index))
        pr.sent(entries[-1].index)

    def _send_snapshot(self, peer: str, pr: Progress) -> None:
        snap = self._log.snapshot
        assert snap is not None, "log compacted without a snapshot"
        self._send(SnapshotRequest(self._term, self.id, peer, snap))
        pr.become_snapshot(snap.index)

    def _send_heartbeat(self, peer: str, pr: Progress) -> None:
        prev, prev_term = pr.match, self._log.term_at(pr.match)
        if prev_term is None:  # compacted: anchor at the oldest term we know
            prev, prev_term = self._log.offset, self._log.offset_term
        commit = min(self._log.commit, prev)
        pr.commit_told = max(pr.commit_told, commit)
        self._send(
            AppendRequest(self._term, self.id, peer, prev, prev_term, (), commit, self._read_seq)
        )

    # -- read index ------------------------------------------------------------------

    def _start_reads(self, ctxs: list[int]) -> None:
        assert self._tracker is not None
        self._read_seq += 1
        for ctx in ctxs:
            self._reads.append((self._read_seq, ctx, self._log.commit))
        for peer, pr in self._tracker:
            if pr.voter:
                self._send_heartbeat(peer, pr)
        self._advance_reads()

    def _advance_reads(self) -> None:
        assert self._tracker is not None
        acked = self._tracker.read_acked(self._read_seq)
        while self._reads and self._reads[0][0] <= acked:
            _, ctx, index = self._reads.popleft()
            self._read_states.append(ReadState(ctx, index))


def _end(pr: Progress, last: int, commit: int) -> int:
    """The last index the leader sends ``pr`` now."""
    if pr.voter:
        return last
    return min(commit, pr.wanted) if pr.lazy else commit


def _well_formed(msg: AppendRequest) -> bool:
    """Entries follow ``prev_index`` contiguously with terms that never decrease and
    never exceed the message's term."""
    if msg.prev_index < 0 or not 0 <= msg.prev_term <= msg.term or msg.commit < 0:
        return False
    index, term = msg.prev_index, msg.prev_term
    for e in msg.entries:
        if e.index != index + 1 or not term <= e.term <= msg.term:
            return False
        if e.kind is EntryKind.CONFIG and not _config_decodes(e.data):
            return False
        index, term = e.index, e.term
    return True


def _config_decodes(data: bytes) -> bool:
    try:
        membership.decode(data)
    except ValueError:
        return False
    return True
