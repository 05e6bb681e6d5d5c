"""Values the Raft state machine exchanges with its driver and its peers.

Every message is a frozen dataclass, one per kind; ``frm`` and ``to`` are node ids.
The wire codec (``fabric.wire.codec``) encodes them; Raft itself never sees bytes
on a socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class EntryKind(IntEnum):
    COMMAND = 0
    """A state-machine command proposed by a client (``data`` is its encoding)."""
    NOOP = 1
    """Appended by every new leader so that it can commit entries of its term."""
    CONFIG = 2
    """A membership change: ``data`` encodes the whole new ``Membership``
    (``membership.encode``). It is in force on a node from the moment it is in that
    node's log, committed or not (see ``fabric.consensus.membership``)."""


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3
    LEARNER = 4
    """Not a voter of the configuration in force here: replicates the log and may answer
    a candidate that counts it as a voter (it may have been promoted without knowing it
    yet), but never campaigns. A node outside the configuration (removed, or about to be
    added) has this role too, once it knows its removal is committed."""


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    kind: EntryKind
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Membership:
    """A Raft configuration: who votes, and who only receives the log."""

    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()

    @property
    def members(self) -> frozenset[str]:
        return frozenset((*self.voters, *self.learners))

    def same_as(self, other: Membership) -> bool:
        """Equal as sets (the order of the ids carries no meaning)."""
        return set(self.voters) == set(other.voters) and set(self.learners) == set(other.learners)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine as of ``index`` (inclusive), which had term ``term``."""

    index: int
    term: int
    data: bytes
    membership: Membership | None = None
    """The configuration in force at ``index``; None in a snapshot made before membership
    changes existed, which means the ``RaftConfig``'s."""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read tagged ``ctx`` may be served once applied >= ``index``."""

    ctx: int
    index: int


@dataclass(frozen=True, slots=True)
class VoteRequest:
    term: int
    frm: str
    to: str
    last_index: int
    last_term: int
    pre_vote: bool


@dataclass(frozen=True, slots=True)
class VoteResponse:
    term: int
    frm: str
    to: str
    granted: bool
    pre_vote: bool


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """Log replication and heartbeat (``entries`` empty)."""

    term: int
    frm: str
    to: str
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    read_seq: int = 0
    """The leader's read-index round this message belongs to (0: none)."""


@dataclass(frozen=True, slots=True)
class AppendResponse:
    term: int
    frm: str
    to: str
    success: bool
    match_index: int
    """On success: the highest index known to match the leader's log."""
    hint_index: int = 0
    """On failure: where the leader should try next (the follower's last index + 1,
    or the first index of the conflicting term)."""
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    term: int
    frm: str
    to: str
    snapshot: Snapshot


Message = VoteRequest | VoteResponse | AppendRequest | AppendResponse | SnapshotRequest


@dataclass(slots=True)
class Ready:
    """What the driver must do, in this order, before calling ``Raft.ready()`` again.

    0. send ``early_messages`` at once, and if ``early_apply``, do steps 3 and 4 now;
    1. persist ``hard_state`` (if not None), ``snapshot`` (if not None, replaces the whole
       log: entries after it came from an abandoned branch) and append ``entries``
       (replacing any persisted entries at the same or later indexes), then fsync (a
       Ready that only moved ``commit`` need not be written at all: see ``must_sync``);
    2. send ``messages``;
    3. apply ``committed`` entries to the state machine in order (and install
       ``snapshot`` into the state machine first, if present);
    4. answer ``read_states`` once the applied index reaches theirs.

    Calling ``ready()`` again tells Raft that step 1 is done: a leader counts its own log
    towards a commit only up to what earlier Readies handed out, so an entry is committed
    only once a majority of voters fsynced it, however the steps overlap.
    """

    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    early_messages: list[Message] = field(default_factory=list)
    """A leader's appends and heartbeats, whose term and vote are durable already: they
    depend on nothing this Ready persists, so the leader's own write overlaps their round
    trip (§10.2.1 of Ongaro's thesis)."""
    early_apply: bool = False
    """Every entry in ``committed`` was persisted by an earlier Ready (no snapshot comes
    with them): the driver may apply them and answer reads while it writes this one."""
    must_sync: bool = False
    """Step 1 changes what a restart must see (entries, a snapshot, term or vote); when
    False only ``commit`` moved, which a restarted node learns again from its leader, so
    the driver may keep it until its next write."""

    def empty(self) -> bool:
        return not (
            self.hard_state
            or self.snapshot
            or self.entries
            or self.messages
            or self.early_messages
            or self.committed
            or self.read_states
        )


@dataclass(frozen=True, slots=True)
class RaftConfig:
    id: str
    voters: tuple[str, ...]
    """The voting members the log starts from, same on every node (from the cluster
    config). Configuration entries in the log, or a snapshot's membership, replace it."""
    learners: tuple[str, ...] = ()
    """Non-voting members that receive the log (the starting configuration too)."""
    election_ticks: int = 10
    """A follower that hears no leader for a random time in [election, 2*election)
    ticks starts a pre-vote."""
    heartbeat_ticks: int = 2
    learner_heartbeat_every: int = 1
    """Learners (and peers leaving) hear every this-many-th heartbeat: they vote in
    nothing, so only their stall detection and how soon an idle one learns a new
    leader depend on it, and a big cluster is mostly learners."""
    lazy_learners: bool = False
    """Committed entries reach a learner with its heartbeat (see above), not at once, unless
    it asks to be caught up (``Raft.catch_up``: it is about to read, or it forwarded a
    proposal) or it is to be promoted. In a big cluster almost every node is a learner,
    and each entry would otherwise cost an append and an answer per node."""
    max_append_entries: int = 256
    """At most this many entries in one AppendRequest (batching)."""
    max_append_bytes: int = 1 << 20
    max_inflight_appends: int = 64
    """Unacknowledged AppendRequests carrying entries per follower."""
    abstain: bool = False
    """This node's durable Raft state was lost (a wiped or replaced disk): a voter that
    forgot what it acknowledged must not vote as if it remembered. It neither votes nor
    campaigns until a configuration in which it is not a voter is in force (it was
    removed, then added back as a learner and promoted: ``fabric node rejoin``)."""


@dataclass(frozen=True, slots=True)
class Restored:
    """Durable state read back at start: what ``Ready`` had persisted before a crash."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()


class MembershipChangeRefused(ValueError):
    """A membership change the leader will not propose (see ``Raft.propose_membership``).

    ``retryable``: the change is sound but not now (an earlier change is not committed
    yet, the leader has not committed an entry of its term, the learner to promote has
    not caught up); otherwise the change itself breaks a rule and never will be taken."""

    def __init__(self, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.retryable = retryable


class NotLeader(Exception):
    """A proposal or read reached a node that is not the leader (an operating error)."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader is {leader or 'unknown'})")
        self.leader = leader
