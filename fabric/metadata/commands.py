"""Metadata commands: every change to the replicated state is one of these, in the Raft log.

Commands are frozen dataclasses registered with the wire codec; the leader encodes a
command into a log entry and every node decodes and applies it in log order, so they
must be deterministic: no clock, no randomness, no iteration over unordered sets. Times
that matter (a node's health transition) travel inside the command.

Tags are part of the durable log format: a tag is never reused or renumbered, and a
command's fields only ever grow at the end with defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fabric.metadata.records import (
    EgroupIntent,
    EventRecord,
    ImageRecord,
    MemberRecord,
    RebuildSettings,
    ScrubSettings,
    StripMember,
    TaskRecord,
    TokenRecord,
)
from fabric.wire.codec import register


@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value``; with ``expect_version``, only if the key is at it (0: absent)."""

    key: str
    value: Any
    expect_version: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    expect_version: int | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """All-or-nothing: every precondition is checked before anything changes."""

    commands: tuple[Put | Delete, ...]


@dataclass(frozen=True, slots=True)
class RegisterNode:
    """A node announces itself (at every start): address and disks."""

    node_id: str
    address: str
    disks: tuple[str, ...]
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class SetNodeState:
    """The leader's health monitor saw ``node_id`` change to ``state`` ("UP"|"DEGRADED"|"DOWN")."""

    node_id: str
    state: str
    at_wall: float
    reason: str = ""


# --- the data path (containers, vdisks, extents, extent groups, strips) ------------------
@register(30)
@dataclass(frozen=True, slots=True)
class CreateContainer:
    name: str
    policy: dict[str, Any]
    at_wall: float


@register(31)
@dataclass(frozen=True, slots=True)
class DeleteContainer:
    name: str


@register(32)
@dataclass(frozen=True, slots=True)
class CreateVdisk:
    vdisk_id: str
    name: str
    container: str
    size: int
    at_wall: float


@register(33)
@dataclass(frozen=True, slots=True)
class DeleteVdisk:
    vdisk_id: str


@register(34)
@dataclass(frozen=True, slots=True)
class NewEgroup:
    egid: str
    container: str
    replicas: tuple[str, ...]
    owner: str


@register(35)
@dataclass(frozen=True, slots=True)
class NewExtent:
    extent_id: str
    egid: str
    offset: int
    stored_len: int
    raw_len: int
    compressed: bool
    checksum: int


@register(36)
@dataclass(frozen=True, slots=True)
class MapWrite:
    index: int
    expect: str | None
    """The extent id the writer read there ("" for a hole), or None for a blind write."""
    extent_id: str
    """The extent to map ("" makes a hole)."""


@register(37)
@dataclass(frozen=True, slots=True)
class WriteExtents:
    vdisk_id: str
    egroups: tuple[NewEgroup, ...]
    extents: tuple[NewExtent, ...]
    maps: tuple[MapWrite, ...]
    seal: tuple[str, ...] = ()
    """Extent groups the writer has filled: no new extent may land in them."""
    claimed: bool = False
    """Each new group was claimed (``RegisterIntents``) and must still be: a claim that
    expired had its files deleted. (Release 0.1 wrote no claims: False.)"""


@register(38)
@dataclass(frozen=True, slots=True)
class SealEgroups:
    egids: tuple[str, ...]


@register(39)
@dataclass(frozen=True, slots=True)
class DropEgroup:
    """Forget a sealed group with no live extent (its files were deleted)."""

    egid: str


@register(60)
@dataclass(frozen=True, slots=True)
class Move:
    container: str
    extent_id: str
    from_egid: str
    offset: int
    """Where the extent now lies in the new group."""
    length: int


@register(61)
@dataclass(frozen=True, slots=True)
class RelocateExtents:
    """Compaction: live extents copied out of a mostly-dead group into ``egroup``.

    A move applies only if the extent still lives in ``from_egid`` (it may have died or
    moved meanwhile); the copy is then dead space in the new group.
    """

    egroup: NewEgroup
    moves: tuple[Move, ...]
    claimed: bool = False
    """``egroup`` was claimed and must still be (see ``WriteExtents.claimed``)."""


@register(63)
@dataclass(frozen=True, slots=True)
class CommitStrip:
    """``k`` sealed data groups (one copy each, on ``node``) and ``m`` parity groups.

    Committed after the parity is durable; surplus data replicas are deleted only after.
    """

    strip_id: str
    container: str
    chunk_bytes: int
    length: int
    """Bytes of each data group covered by the parity (the longest, in whole chunks)."""
    data: tuple[StripMember, ...]
    parity: tuple[StripMember, ...]
    parity_bytes: int
    """Size of each parity group."""
    claimed: bool = False
    """Its parity files (and copies) were claimed under the strip id and must still be."""


@register(64)
@dataclass(frozen=True, slots=True)
class MoveStripMember:
    """A lost member was rebuilt on ``to_node``."""

    strip_id: str
    egid: str
    from_node: str
    to_node: str
    claimed: bool = False
    """The rebuilt file was claimed as ``<strip_id>/<egid>`` and must still be."""


@register(65)
@dataclass(frozen=True, slots=True)
class DropStrip:
    """Forget a strip whose data groups hold no live extent (its files were deleted)."""

    strip_id: str


@register(67)
@dataclass(frozen=True, slots=True)
class PackedExtent:
    """An extent of a packed strip: where it came from and where it lies now."""

    member: int
    """Index in ``CommitPackedStrip.data`` of the group it was copied into."""
    move: Move
    """Its old group, and its offset and length in the new one."""


@register(68)
@dataclass(frozen=True, slots=True)
class CommitPackedStrip:
    """Cold groups too few to make a strip of ``k`` (the container's tail): their live
    extents, copied back to back into ``len(data)`` new groups of one copy each, on
    distinct fault domains, beside ``len(parity)`` parity groups, become one strip.

    Committed once data and parity are durable. An extent moves only if it still lives
    where it was read, as in ``RelocateExtents``; otherwise its copy is dead space. The
    groups it came from keep their files until the scanner collects them, empty.
    """

    strip_id: str
    container: str
    chunk_bytes: int
    length: int
    """Bytes of each data group covered by the parity (the longest, in whole chunks)."""
    data: tuple[StripMember, ...]
    parity: tuple[StripMember, ...]
    parity_bytes: int
    """Size of each parity group."""
    extents: tuple[PackedExtent, ...]
    claimed: bool = False
    """Its data and parity files were claimed under the strip id and must still be."""


@register(66)
@dataclass(frozen=True, slots=True)
class ResizeVdisk:
    """Set a vdisk's size (an image whose size was known only at its end, say)."""

    vdisk_id: str
    size: int


# --- garbage collection of files written before their metadata ---------------------------
@register(100)
@dataclass(frozen=True, slots=True)
class RegisterIntents:
    """Files are about to be written for these groups: claim them before the first byte."""

    intents: tuple[EgroupIntent, ...]


@register(101)
@dataclass(frozen=True, slots=True)
class DropIntent:
    """The claim ``intent_id`` is over and its uncommitted files are deleted."""

    intent_id: str


@register(102)
@dataclass(frozen=True, slots=True)
class PruneTombstones:
    """No disk holds a file of these dropped groups any more: forget them."""

    egids: tuple[str, ...]


# --- healing: re-replication, the event log, settings ------------------------------------
@register(103)
@dataclass(frozen=True, slots=True)
class AddReplica:
    """A sealed group's copy on ``lost`` (a node or disk gone) was rebuilt on ``to_node``.

    The new copy was claimed as ``rebuild/<egid>`` and is durable; ``lost`` leaves the
    replicas ("" when the group simply had fewer than its RF). Refused if the group
    changed meanwhile (dropped, erasure coded, ``lost`` no longer listed).
    """

    egid: str
    lost: str
    to_node: str
    bytes_copied: int = 0


@register(107)
@dataclass(frozen=True, slots=True)
class SetDiskState:
    """A node saw one of its disks change state (UP, FULL, FAILED)."""

    node: str
    disk: str
    state: str
    at_wall: float
    reason: str = ""
    used_bytes: int = 0
    capacity_bytes: int = 0


@register(111)
@dataclass(frozen=True, slots=True)
class MarkCopiesLost:
    """``node`` no longer holds its copies of ``egids`` (their disk failed, or came back
    empty): it leaves their replicas, and the rebuild makes the copies again."""

    node: str
    egids: tuple[str, ...]
    reason: str
    at_wall: float


@register(109)
@dataclass(frozen=True, slots=True)
class SetNodeDrain:
    """Start (or stop) emptying ``node_id`` of data before it is removed."""

    node_id: str
    draining: bool
    at_wall: float


@register(110)
@dataclass(frozen=True, slots=True)
class SetMember:
    """A node joins the running cluster (or, with ``removed``, has left it)."""

    member: MemberRecord
    at_wall: float


@register(112)
@dataclass(frozen=True, slots=True)
class SetToken:
    """Create an API token, or (``revoked``) revoke one."""

    token: TokenRecord
    at_wall: float


@register(104)
@dataclass(frozen=True, slots=True)
class RecordEvents:
    """Append to the event log (each event's ``seq`` is assigned on apply)."""

    events: tuple[EventRecord, ...]


@register(105)
@dataclass(frozen=True, slots=True)
class SetRebuildSettings:
    settings: RebuildSettings


@register(106)
@dataclass(frozen=True, slots=True)
class SetScrubSettings:
    settings: ScrubSettings


# --- the image catalog -------------------------------------------------------------------
@register(70)
@dataclass(frozen=True, slots=True)
class CreateImage:
    """A PENDING image with a unique name, and the import task that fills it, if any."""

    image: ImageRecord
    task: TaskRecord | None = None


@register(71)
@dataclass(frozen=True, slots=True)
class UpdateImage:
    """Compare-and-set: store ``image`` if the current one is in ``expect_state``.

    The move ``expect_state -> image.state`` must be legal (``fabric.metadata.lifecycle``);
    so of two racing updates from PENDING (the owner's ACTIVE, the leader's orphan sweep's
    ERROR) exactly one applies and the other is refused.
    """

    image: ImageRecord
    expect_state: str


@register(72)
@dataclass(frozen=True, slots=True)
class DeleteImage:
    image_id: str


@register(73)
@dataclass(frozen=True, slots=True)
class UpdateTask:
    """Compare-and-set on a task, like ``UpdateImage``."""

    task: TaskRecord
    expect_state: str


@register(124)
@dataclass(frozen=True, slots=True)
class ExpireImage:
    """A PENDING image no upload ever started for turns ERROR with ``reason``.

    Applies only if the image is still at ``version`` (the Raft index that last wrote it,
    which the leader watched stay put) with no node converting it and no vdisk: an upload
    that claimed the image meanwhile changed its version, so expiry never races it.
    ``UpdateImage`` compares the state only, and PENDING is also the state of an upload
    under way.
    """

    image_id: str
    version: int
    reason: str


KvCommand = Put | Delete | Batch
NodeCommand = RegisterNode | SetNodeState
DataCommand = (
    CreateContainer
    | DeleteContainer
    | CreateVdisk
    | DeleteVdisk
    | ResizeVdisk
    | WriteExtents
    | SealEgroups
    | DropEgroup
    | RelocateExtents
    | CommitStrip
    | CommitPackedStrip
    | MoveStripMember
    | DropStrip
    | RegisterIntents
    | DropIntent
    | PruneTombstones
    | AddReplica
    | MarkCopiesLost
)
HealCommand = (
    RecordEvents | SetRebuildSettings | SetScrubSettings | SetDiskState | SetNodeDrain | SetMember
)
CatalogCommand = CreateImage | UpdateImage | DeleteImage | UpdateTask | ExpireImage
AccessCommand = SetToken
Command = KvCommand | NodeCommand | DataCommand | CatalogCommand | HealCommand | AccessCommand

register(20)(Put)
register(21)(Delete)
register(22)(Batch)
register(23)(RegisterNode)
register(24)(SetNodeState)
