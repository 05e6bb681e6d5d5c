"""The typed records of the replicated metadata: one frozen dataclass per kind.

Every value in the key space is one of these (or, for the name indexes and block maps,
a plain string; for the user's ``kv/`` space, plain JSON-like data). Records are
immutable: a command builds the new version with ``dataclasses.replace`` and puts it
back. They travel and persist through the versioned wire codec, so a record read back
from a snapshot or a peer is type-checked field by field on the way in.

``to_json`` is the HTTP edge: the only place a record becomes a dict again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fabric.extents.policy import ContainerPolicy
from fabric.wire.codec import register, register_class

register_class(ContainerPolicy, 79)

NODE_STATES = ("UP", "DEGRADED", "DOWN")
IMAGE_STATES = ("PENDING", "ACTIVE", "ERROR")
IMAGE_TYPES = ("DISK", "ISO")
TASK_STATES = ("RUNNING", "SUCCEEDED", "FAILED")


def to_json(record: Any) -> dict[str, Any]:
    """A record as plain JSON-ready data (tuples become lists, nested records dicts)."""
    out: dict[str, Any] = dataclasses.asdict(record)
    return out


@register(80)
@dataclass(frozen=True, slots=True)
class NodeRecord:
    id: str
    address: str
    disks: tuple[str, ...]
    labels: dict[str, str]
    state: str = "UP"
    """One of ``NODE_STATES``, as last committed by the leader's health monitor."""
    state_since: float = 0.0
    reason: str = ""
    draining: bool = False
    """Being emptied before it leaves (``fabric node remove``): no new data goes there and
    the rebuild moves every copy it holds elsewhere."""


@register(81)
@dataclass(frozen=True, slots=True)
class ContainerStats:
    """Running totals of a container, changed by the same commands that change the data."""

    logical_bytes: int = 0
    unique_bytes: int = 0
    stored_bytes: int = 0
    physical_bytes: int = 0
    extents: int = 0
    vdisks: int = 0
    ec_data_bytes: int = 0
    ec_parity_bytes: int = 0
    ec_strips: int = 0
    rebuilt_bytes: int = 0
    """Bytes copied or recomputed to restore lost replicas and strip members (ever)."""

    def add(self, **deltas: int) -> ContainerStats:
        values = {name: getattr(self, name) + delta for name, delta in deltas.items()}
        for name, value in values.items():
            assert value >= 0, f"container total {name} went negative ({value})"
        return dataclasses.replace(self, **values)


@register(82)
@dataclass(frozen=True, slots=True)
class ContainerRecord:
    name: str
    policy: ContainerPolicy
    created: float
    stats: ContainerStats


@register(83)
@dataclass(frozen=True, slots=True)
class VdiskRecord:
    id: str
    name: str
    container: str
    size: int
    created: float
    mapped_extents: int = 0
    """Extents that are not holes."""
    logical_bytes: int = 0


@register(84)
@dataclass(frozen=True, slots=True)
class ExtentRecord:
    """Where an extent's stored bytes are, and how many block-map entries point at it."""

    refs: int
    egroup: str
    offset: int
    stored_len: int
    raw_len: int
    compressed: bool
    checksum: int


@register(85)
@dataclass(frozen=True, slots=True)
class EgroupRecord:
    """An extent group: its replicas, its live and dead bytes, and its lifecycle."""

    egid: str
    container: str
    replicas: tuple[str, ...]
    owner: str
    live_bytes: int = 0
    dead_bytes: int = 0
    extents: int = 0
    sealed: bool = False
    strip: str = ""
    """The strip it belongs to once erasure coded ("" before)."""
    parity: bool = False
    lost_copies: int = 0
    """Copies lost with a failed or wiped disk and not made again yet (each took its node
    out of ``replicas``); the rebuild adds one back per ``AddReplica``."""

    @property
    def size(self) -> int:
        return self.live_bytes + self.dead_bytes


@register(62)  # the tag CommitStrip used before records existed: old logs still decode
@dataclass(frozen=True, slots=True)
class StripMember:
    egid: str
    node: str


@register(87)
@dataclass(frozen=True, slots=True)
class StripRecord:
    id: str
    container: str
    k: int
    m: int
    chunk_bytes: int
    length: int
    data: tuple[StripMember, ...]
    parity: tuple[StripMember, ...]
    parity_bytes: int
    data_bytes: int

    @property
    def members(self) -> tuple[StripMember, ...]:
        return self.data + self.parity


@register(88)
@dataclass(frozen=True, slots=True)
class Checksum:
    type: str
    """"sha256" or "sha1"."""
    value: str


@register(89)
@dataclass(frozen=True, slots=True)
class ImageRecord:
    id: str
    name: str
    container: str
    state: str
    """One of ``IMAGE_STATES``; the legal moves are in ``fabric.metadata.lifecycle``."""
    image_type: str
    created: float
    source_format: str | None = None
    virtual_size: int | None = None
    source_bytes: int = 0
    stored_bytes: int = 0
    source_sha256: str | None = None
    error: str | None = None
    source_url: str | None = None
    checksum: Checksum | None = None
    vdisk_id: str | None = None
    node: str | None = None
    """The node converting it while PENDING (None once it has ended)."""
    task_id: str | None = None
    # Fields below were added after release 0.2; older records decode with the defaults.
    declared_format: str | None = None
    """The source format the user declared (``fabric.images.declared.FORMATS``); the
    content must be of it. None: detected freely."""
    type_declared: bool = False
    """Whether ``image_type`` was given by the user (then the content must agree) or is
    the default, which follows the content."""
    padded_bytes: int = 0
    """Zeros added to end a raw source on a whole sector (``virtual_size`` includes them)."""
    logical_bytes: int = 0
    """Guest bytes that are not holes (whole extents), as a vdisk counts them."""


@register(90)
@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    kind: str
    image_id: str
    state: str
    """One of ``TASK_STATES``."""
    node: str
    progress: float = 0.0
    bytes_done: int = 0
    bytes_expected: int | None = None
    error: str | None = None


@register(91)
@dataclass(frozen=True, slots=True)
class EgroupIntent:
    """A claim on extent-group files about to be written, committed before their first byte.

    A new data group claims its replicas (``id`` is its egid); an EC conversion claims
    its parity groups and the copies it makes (``id`` is the strip id). The command
    that makes the files part of the metadata (``WriteExtents``, ``RelocateExtents``,
    ``CommitStrip``) ends the claim; a claim that stays open past a timeout belongs to a
    writer that died or gave up, and the scanner deletes its files. So every file on a
    disk is referenced by a record, claimed by an intent, or garbage.
    """

    id: str
    container: str
    files: tuple[StripMember, ...]
    """(egid, node) of every file the claim covers."""
    owner: str


@register(92)
@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of the cluster's event log: a state change, a repair, a finding."""

    seq: int
    """Position in the log (assigned when the event is committed; 0 before)."""
    at_wall: float
    kind: str
    """One of ``EVENT_KINDS``."""
    node: str
    """The node it happened on or to ("" for the cluster as a whole)."""
    subject: str
    """What it is about: a node, disk, extent group, container ("" if nothing more)."""
    message: str
    severity: str = "info"
    """One of ``EVENT_SEVERITIES``."""


EVENT_KINDS = (
    "node_state",
    "disk_state",
    "copies_lost",
    "rebuild_started",
    "rebuild_finished",
    "rebuild_stuck",
    "replica_rebuilt",
    "scrub_error",
    "scrub_repaired",
    "scrub_cycle",
    "settings",
    "node_drain",
    "membership",
    "rebalance_started",
    "rebalance_finished",
    "access",
    "fault",
)
EVENT_SEVERITIES = ("info", "warning", "error")


DISK_STATES = ("UP", "FULL", "FAILED")


@register(95)
@dataclass(frozen=True, slots=True)
class DiskRecord:
    """One disk of a node as its node last reported it (``disk/<node>/<name>``)."""

    node: str
    name: str
    state: str
    """One of ``DISK_STATES``: FULL takes no new groups, FAILED holds nothing."""
    since: float
    reason: str = ""
    used_bytes: int = 0
    capacity_bytes: int = 0


@register(96)
@dataclass(frozen=True, slots=True)
class MemberRecord:
    """A node added to (or removed from) the running cluster after its config was
    written (``member/<id>``): where it listens, its disks and fault-domain labels.
    The nodes of the cluster are the config's, changed by these records."""

    id: str
    host: str
    port: int
    disks: tuple[str, ...]
    labels: dict[str, str]
    disk_capacity: tuple[int, ...] = ()
    removed: bool = False


@register(86)
@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token (``token/<id>``): who it is for, its role, the SHA-256 of its secret
    part (``fabric.tokens``; never the token itself)."""

    id: str
    name: str
    role: str
    secret_sha256: str
    created_wall: float
    revoked: bool = False


@register(93)
@dataclass(frozen=True, slots=True)
class RebuildSettings:
    """How the cluster restores resiliency (the config's ``[rebuild]``, changed at runtime)."""

    delay_s: float = 10.0
    """A node DOWN this long has its data rebuilt elsewhere (0: at once)."""
    bytes_per_s: int = 0
    """Cluster-wide rebuild byte rate (0: no limit)."""
    per_node: int = 8
    """Copies a node takes part in at once, as source or target."""


@register(94)
@dataclass(frozen=True, slots=True)
class ScrubSettings:
    """How each node re-reads and verifies its extent groups (the config's ``[scrub]``)."""

    bytes_per_s: int = 50_000_000
    """Read rate of one node's scrubber (0: as fast as the disks go)."""
    cycle_s: float = 86_400.0
    """A node starts a new pass over all its groups this long after the last began."""
    run_now: int = 0
    """Raised by ``fabric scrub --now``: every node starts a pass when it sees it grow."""
