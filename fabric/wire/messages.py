"""Every message kind that crosses between nodes, with its wire tag.

Raft's messages are defined in ``fabric.consensus.types`` (they belong to Raft) and
registered here; node-level requests and replies are defined here. Tags are part of the
wire format: never reuse or renumber one. Every kind is registered with its check
(``fabric.wire.checks``), which ``decode`` runs on each one a peer sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fabric.consensus import types as raft
from fabric.wire import checks
from fabric.wire.codec import Check, register, register_class

_RAFT: tuple[tuple[int, type, Check], ...] = (
    (1, raft.Entry, checks.entry),
    (2, raft.Snapshot, checks.snapshot),
    (3, raft.VoteRequest, checks.vote_request),
    (4, raft.VoteResponse, checks.vote_response),
    (5, raft.AppendRequest, checks.append_request),
    (6, raft.AppendResponse, checks.append_response),
    (7, raft.SnapshotRequest, checks.snapshot_request),
    (108, raft.Membership, checks.membership_of),  # inside a Snapshot (as of its index)
)
for _tag, _cls, _check in _RAFT:
    register_class(_cls, _tag, _check, shared=_cls is raft.Entry)


@register(40, checks.error_reply)
@dataclass(frozen=True, slots=True)
class ErrorReply:
    code: str
    message: str


@register(41, checks.propose_request)
@dataclass(frozen=True, slots=True)
class ProposeRequest:
    """A follower forwards a metadata command (encoded) to the leader."""

    command: bytes


@register(42, checks.propose_reply)
@dataclass(frozen=True, slots=True)
class ProposeReply:
    ok: bool
    value: Any
    code: str
    message: str
    index: int
    """Where the command was applied: the follower waits for it (read your writes)."""


@register(43)
@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower asks the leader for a linearizable read index."""


@register(44, checks.read_index_reply)
@dataclass(frozen=True, slots=True)
class ReadIndexReply:
    index: int


@register(45, checks.node_report)
@dataclass(frozen=True, slots=True)
class NodeReport:
    """A node's periodic health report to the leader."""

    node_id: str
    state: str
    """What the node thinks of itself: UP, or DEGRADED (a disk failed, say)."""
    detail: dict[str, Any]


@register(46)
@dataclass(frozen=True, slots=True)
class Ack:
    pass


@register(47, checks.cluster_view_request)
@dataclass(frozen=True, slots=True)
class ClusterViewRequest:
    """Ask the leader for its view of the cluster (membership, health, usage)."""

    trends: int = 0
    """With this many of the leader's newest samples of capacity and throughput (the
    console's charts draw them all; its summary shows the newest)."""


@register(48, checks.cluster_view_reply)
@dataclass(frozen=True, slots=True)
class ClusterViewReply:
    view: dict[str, Any]


@register(50, checks.append_extents)
@dataclass(frozen=True, slots=True)
class AppendExtents:
    """Append stored extents to an extent group replica and fsync once for all of them."""

    __bulk__: ClassVar[str] = "payloads"
    egid: str
    payloads: tuple[bytes, ...]
    at: int = -1
    """Where the first payload must land (the writer reserved the range, so batches
    in flight reach the file in order whatever order they arrive in); -1: at the end."""


@register(51, checks.append_reply)
@dataclass(frozen=True, slots=True)
class AppendReply:
    offsets: tuple[int, ...]


@register(52, checks.read_extent)
@dataclass(frozen=True, slots=True)
class ReadExtent:
    egid: str
    offset: int
    length: int


@register(53)
@dataclass(frozen=True, slots=True)
class ExtentData:
    data: bytes


@register(54, checks.repair_extent)
@dataclass(frozen=True, slots=True)
class RepairExtent:
    """Overwrite a replica's bad copy of an extent with good stored bytes."""

    egid: str
    offset: int
    data: bytes


@register(55, checks.egid_only)
@dataclass(frozen=True, slots=True)
class DeleteEgroupFiles:
    egid: str


@register(56, checks.egid_only)
@dataclass(frozen=True, slots=True)
class StatEgroup:
    egid: str


@register(57, checks.egroup_stat)
@dataclass(frozen=True, slots=True)
class EgroupStat:
    size: int


@register(58)
@dataclass(frozen=True, slots=True)
class ListEgroups:
    """Which extent-group files does this node hold? (the scanner's orphan sweep)"""


@register(59, checks.egroup_list)
@dataclass(frozen=True, slots=True)
class EgroupList:
    egids: tuple[str, ...]


@register(120, checks.extent_check)
@dataclass(frozen=True, slots=True)
class ExtentCheck:
    """A live extent of a group: where it lies and the checksum of its stored bytes."""

    offset: int
    length: int
    checksum: int


@register(121, checks.pull_egroup)
@dataclass(frozen=True, slots=True)
class PullEgroup:
    """Make a copy of extent group ``egid`` on this node from ``sources`` (rebuild).

    The target reads the source's file a window at a time (the next source on a
    failure), checks every live extent against its checksum (a bad range is read from
    another source), writes, fsyncs once, and answers with the bytes copied.
    """

    egid: str
    sources: tuple[str, ...]
    checks: tuple[ExtentCheck, ...]


@register(122, checks.pull_reply)
@dataclass(frozen=True, slots=True)
class PullReply:
    bytes_copied: int
    bad_ranges: int
    """Ranges that failed their checksum on some source and came from another."""


@register(123, checks.membership_request)
@dataclass(frozen=True, slots=True)
class MembershipRequest:
    """Ask the leader for one Raft configuration change: ``op`` is ``add_learner``,
    ``promote`` or ``remove``, of ``node`` (the leader computes the new configuration
    from its own)."""

    op: str
    node: str


@register(130, checks.fault_control)
@dataclass(frozen=True, slots=True)
class FaultControl:
    """Fault control, node to node, outside the faults it controls (``fabric.faults``).

    ``op`` is ``inject`` (``fault``: a ``Fault`` record as text, with this node's
    part of the plan in its peers), ``clear`` (``fault_id``; "" clears every fault)
    or ``list``. It travels on its own route, signed on the true clock, and skips the
    transport's injected faults, so a partitioned or skewed node still hears "clear".
    """

    op: str
    fault: str = ""
    fault_id: str = ""


@register(131, checks.fault_state)
@dataclass(frozen=True, slots=True)
class FaultState:
    """A node's active faults (``Fault`` records as text) and what the caller may need
    to undo a pause from outside: the process id."""

    faults: tuple[str, ...]
    pid: int
    wall_skew_s: float
