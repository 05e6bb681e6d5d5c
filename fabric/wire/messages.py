"""Every message kind that crosses between nodes, with its wire tag.

Raft's messages are defined in ``fabric.consensus.types`` (they belong to Raft) and
registered here; node-level requests and replies are defined here. Tags are part of the
wire format: never reuse or renumber one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fabric.consensus import types as raft
from fabric.wire.codec import register, register_class

for _tag, _cls in (
    (1, raft.Entry),
    (2, raft.Snapshot),
    (3, raft.VoteRequest),
    (4, raft.VoteResponse),
    (5, raft.AppendRequest),
    (6, raft.AppendResponse),
    (7, raft.SnapshotRequest),
    (108, raft.Membership),  # inside a Snapshot (the configuration as of its index)
):
    register_class(_cls, _tag)


@register(40)
@dataclass(frozen=True, slots=True)
class ErrorReply:
    code: str
    message: str


@register(41)
@dataclass(frozen=True, slots=True)
class ProposeRequest:
    """A follower forwards a metadata command (encoded) to the leader."""

    command: bytes


@register(42)
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


@register(44)
@dataclass(frozen=True, slots=True)
class ReadIndexReply:
    index: int


@register(45)
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


@register(47)
@dataclass(frozen=True, slots=True)
class ClusterViewRequest:
    """Ask the leader for its view of the cluster (membership, health, usage)."""


@register(48)
@dataclass(frozen=True, slots=True)
class ClusterViewReply:
    view: dict[str, Any]


@register(50)
@dataclass(frozen=True, slots=True)
class AppendExtents:
    """Append stored extents to an extent group replica and fsync once for all of them."""

    __bulk__: ClassVar[str] = "payloads"
    egid: str
    payloads: tuple[bytes, ...]
    at: int = -1
    """Where the first payload must land (the writer reserved the range, so batches
    in flight reach the file in order whatever order they arrive in); -1: at the end."""


@register(51)
@dataclass(frozen=True, slots=True)
class AppendReply:
    offsets: tuple[int, ...]


@register(52)
@dataclass(frozen=True, slots=True)
class ReadExtent:
    egid: str
    offset: int
    length: int


@register(53)
@dataclass(frozen=True, slots=True)
class ExtentData:
    data: bytes


@register(54)
@dataclass(frozen=True, slots=True)
class RepairExtent:
    """Overwrite a replica's bad copy of an extent with good stored bytes."""

    egid: str
    offset: int
    data: bytes


@register(55)
@dataclass(frozen=True, slots=True)
class DeleteEgroupFiles:
    egid: str


@register(56)
@dataclass(frozen=True, slots=True)
class StatEgroup:
    egid: str


@register(57)
@dataclass(frozen=True, slots=True)
class EgroupStat:
    size: int


@register(58)
@dataclass(frozen=True, slots=True)
class ListEgroups:
    """Which extent-group files does this node hold? (the scanner's orphan sweep)"""


@register(59)
@dataclass(frozen=True, slots=True)
class EgroupList:
    egids: tuple[str, ...]


@register(120)
@dataclass(frozen=True, slots=True)
class ExtentCheck:
    """A live extent of a group: where it lies and the checksum of its stored bytes."""

    offset: int
    length: int
    checksum: int


@register(121)
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


@register(122)
@dataclass(frozen=True, slots=True)
class PullReply:
    bytes_copied: int
    bad_ranges: int
    """Ranges that failed their checksum on some source and came from another."""


@register(123)
@dataclass(frozen=True, slots=True)
class MembershipRequest:
    """Ask the leader for one Raft configuration change: ``op`` is ``add_learner``,
    ``promote`` or ``remove``, of ``node`` (the leader computes the new configuration
    from its own)."""

    op: str
    node: str
