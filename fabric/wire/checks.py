"""What a message from a peer must be beyond its field types: one check per kind.

The codec (``fabric.wire.codec``) has already made every field the type its dataclass
declares; these checks say what types cannot, and ``decode`` runs them on each value it
builds, so every handler gets a message that passed (``messages.py`` registers each
kind with its check):

* node ids and extent-group ids follow their grammar (``fabric.ids``): no id a peer
  sends can name a path outside a disk, or a file that is not a group's;
* terms, log indexes, read sequences and counts are in ``[0, MAX_WIRE_INDEX]``;
* offsets and sizes in a group file are in ``[0, MAX_EGROUP_FILE_BYTES]``, and a
  read asks for no more than a message can carry back;
* lists are bounded, texts are bounded, enums name one of their values;
* a forwarded metadata command is a command that ``fabric.metadata.validate`` accepts,
  and a configuration entry is a configuration ``fabric.consensus.membership`` accepts.

A check raises ``WireError`` (or the ``BadId`` of an id parser); the codec turns either
into ``WireError`` with reason ``invalid``. Checks read only the message: whether the
sender may send it at all (authentication, who may speak for whom) is the transport's
and the node's business.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fabric import faults, ids, limits
from fabric.consensus import membership
from fabric.consensus.types import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    Membership,
    Snapshot,
    SnapshotRequest,
    VoteRequest,
    VoteResponse,
)
from fabric.metadata import keys, validate
from fabric.metadata.records import DISK_STATES
from fabric.wire.codec import WireError, decode

if TYPE_CHECKING:
    from fabric.wire.messages import (
        AppendExtents,
        AppendReply,
        ClusterViewReply,
        ClusterViewRequest,
        EgroupList,
        EgroupStat,
        ErrorReply,
        ExtentCheck,
        FaultControl,
        FaultState,
        MembershipRequest,
        NodeReport,
        ProposeReply,
        ProposeRequest,
        PullEgroup,
        PullReply,
        ReadExtent,
        ReadIndexReply,
        RepairExtent,
    )

MEMBERSHIP_OPS = ("add_learner", "promote", "remove")
FAULT_OPS = ("inject", "clear", "list")
REPORT_STATES = ("UP", "DEGRADED")
"""What a node may say of itself (DOWN is the leader's verdict, never a report)."""
_CODE = re.compile(r"[a-z_]{0,32}\Z")
"""An error code (``fabric.errors``): short, lower case; "" for none."""


# --- the leaves ---------------------------------------------------------------------------
def index(name: str, value: int) -> None:
    """A term, log index, read sequence or count."""
    if not 0 <= value <= limits.MAX_WIRE_INDEX:
        raise WireError(f"{name} {value} out of range")


def file_offset(name: str, value: int) -> None:
    """An offset or a size inside an extent-group file."""
    if not 0 <= value <= limits.MAX_EGROUP_FILE_BYTES:
        raise WireError(f"{name} {value} outside an extent-group file")


def items(name: str, values: tuple[Any, ...] | list[Any], most: int) -> None:
    if len(values) > most:
        raise WireError(f"{len(values)} {name}, at most {most}")


def text(name: str, value: str) -> None:
    if len(value) > limits.MAX_WIRE_TEXT_CHARS:
        raise WireError(f"{name} longer than {limits.MAX_WIRE_TEXT_CHARS} characters")


def code(name: str, value: str) -> None:
    if not _CODE.match(value):
        raise WireError(f"{name} {value[:40]!r} is not an error code")


def nodes(name: str, values: tuple[str, ...]) -> None:
    items(name, values, limits.MAX_NODES)
    for node in values:
        ids.node_id(node)
    if len(set(values)) != len(values):
        raise WireError(f"a node appears twice in {name}")


# --- Raft -------------------------------------------------------------------------------
def entry(e: Entry) -> None:
    index("entry index", e.index)
    index("entry term", e.term)
    if len(e.data) > limits.MAX_COMMAND_BYTES:
        raise WireError(f"entry of {len(e.data)} bytes, at most {limits.MAX_COMMAND_BYTES}")
    if e.kind == EntryKind.NOOP and e.data:
        raise WireError("a no-op entry carries no data")
    if e.kind == EntryKind.CONFIG:
        try:
            membership_of(membership.decode(e.data))
        except ValueError as exc:
            raise WireError(f"configuration entry: {exc}") from None
    # A COMMAND entry's bytes are decoded and validated when applied, where a malformed
    # one is refused as a result (``MetadataState.apply_entry``): decoding every entry
    # twice on its way in would cost the replication path for no added safety.


def membership_of(m: Membership) -> None:
    for node in (*m.voters, *m.learners):
        ids.node_id(node)
    why = membership.problem(m)
    if why is not None:
        raise WireError(why)


def snapshot(s: Snapshot) -> None:
    index("snapshot index", s.index)
    index("snapshot term", s.term)
    # Membership nested inside was checked when it was built (it is a registered kind).


def _peers(frm: str, to: str) -> None:
    ids.node_id(frm)
    ids.node_id(to)


def vote_request(m: VoteRequest) -> None:
    _peers(m.frm, m.to)
    for name in ("term", "last_index", "last_term"):
        index(name, getattr(m, name))
    if m.last_term > m.term:
        raise WireError(f"last_term {m.last_term} beyond the campaign's term {m.term}")


def vote_response(m: VoteResponse) -> None:
    _peers(m.frm, m.to)
    index("term", m.term)


def append_request(m: AppendRequest) -> None:
    _peers(m.frm, m.to)
    for name in ("term", "prev_index", "prev_term", "commit", "read_seq"):
        index(name, getattr(m, name))
    items("entries", m.entries, limits.MAX_APPEND_ENTRIES)
    if m.prev_term > m.term:
        raise WireError(f"prev_term {m.prev_term} beyond the leader's term {m.term}")
    for i, e in enumerate(m.entries):
        # Raft's log matching rests on this: the entries follow prev_index one by one,
        # none from a term after the leader's own.
        if e.index != m.prev_index + 1 + i:
            raise WireError(f"entry {i} has index {e.index}, expected {m.prev_index + 1 + i}")
        if e.term > m.term:
            raise WireError(f"entry {e.index} of term {e.term}, after the leader's {m.term}")


def append_response(m: AppendResponse) -> None:
    _peers(m.frm, m.to)
    for name in ("term", "match_index", "hint_index", "read_seq"):
        index(name, getattr(m, name))


def snapshot_request(m: SnapshotRequest) -> None:
    _peers(m.frm, m.to)
    index("term", m.term)
    if m.snapshot.term > m.term:
        raise WireError(f"snapshot of term {m.snapshot.term}, after the leader's {m.term}")


# --- metadata and health ------------------------------------------------------------------
def error_reply(m: ErrorReply) -> None:
    code("code", m.code)
    text("message", m.message)


def propose_request(m: ProposeRequest) -> None:
    if len(m.command) > limits.MAX_COMMAND_BYTES:
        raise WireError(f"command of {len(m.command)} bytes, at most {limits.MAX_COMMAND_BYTES}")
    why = validate.problem(decode(m.command))
    if why is not None:
        raise WireError(why)


def propose_reply(m: ProposeReply) -> None:
    code("code", m.code)
    text("message", m.message)
    index("index", m.index)
    # ``value`` is what applying the command returned: typed by the codec where it is a
    # record, read by the proposer for the kinds it knows (see MetadataService.propose).


def read_index_reply(m: ReadIndexReply) -> None:
    index("index", m.index)


def node_report(m: NodeReport) -> None:
    ids.node_id(m.node_id)
    if m.state not in REPORT_STATES:
        raise WireError(f"a node reports itself {m.state[:40]!r}")
    unknown = set(m.detail) - {"disks", "reason", "out_of_service_s", "io"}
    if unknown:
        raise WireError(f"unknown report field {sorted(unknown)[0][:40]!r}")
    out_s = m.detail.get("out_of_service_s", 0.0)
    if isinstance(out_s, bool) or not isinstance(out_s, int | float) or not 0 <= out_s < 1e12:
        raise WireError("a report's out_of_service_s is a number of seconds")
    reason = m.detail.get("reason", "")
    if not isinstance(reason, str):
        raise WireError("a report's reason is text")
    text("reason", reason)
    disks = m.detail.get("disks", [])
    if not isinstance(disks, list):
        raise WireError("a report's disks are a list")
    items("disks", disks, limits.MAX_WIRE_LIST_ITEMS)
    for disk in disks:
        _disk_report(disk)
    io = m.detail.get("io", {})
    if not isinstance(io, dict) or not set(io) <= {"written_bytes", "read_bytes"}:
        raise WireError("a report's io holds written_bytes and read_bytes")
    for name, value in io.items():
        if type(value) is not int:
            raise WireError(f"a report's {name} is an integer")
        index(name, value)


def _disk_report(disk: Any) -> None:
    if not isinstance(disk, dict) or not {"name", "state"} <= set(disk) <= {
        "name",
        "state",
        "used_bytes",
        "capacity_bytes",
        "error",
    }:
        raise WireError("a disk report holds name, state, used_bytes, capacity_bytes, error")
    ids.disk_name(disk["name"])
    if disk["state"] not in DISK_STATES:
        raise WireError(f"disk state {str(disk['state'])[:40]!r}")
    for name in ("used_bytes", "capacity_bytes"):
        value = disk.get(name, 0)
        if type(value) is not int:
            raise WireError(f"a disk's {name} is an integer")
        index(name, value)
    error = disk.get("error", "")
    if not isinstance(error, str):
        raise WireError("a disk's error is text")
    text("error", error)


def cluster_view_request(m: ClusterViewRequest) -> None:
    if not 0 <= m.trends <= limits.TRENDS_KEPT:
        raise WireError(f"trends {m.trends} out of range: 0..{limits.TRENDS_KEPT} samples")


def cluster_view_reply(m: ClusterViewReply) -> None:
    if not keys.json_like(m.view):
        raise WireError("a cluster view is plain JSON data")


def membership_request(m: MembershipRequest) -> None:
    if m.op not in MEMBERSHIP_OPS:
        raise WireError(f"membership op {m.op[:40]!r}")
    ids.node_id(m.node)


# --- extent-group replicas ------------------------------------------------------------------
def append_extents(m: AppendExtents) -> None:
    ids.egid(m.egid)
    items("payloads", m.payloads, limits.MAX_WIRE_LIST_ITEMS)
    if m.at != -1:
        file_offset("at", m.at)
        file_offset("end", m.at + sum(map(len, m.payloads)))


def append_reply(m: AppendReply) -> None:
    items("offsets", m.offsets, limits.MAX_WIRE_LIST_ITEMS)
    for offset in m.offsets:
        file_offset("offset", offset)


def read_extent(m: ReadExtent) -> None:
    ids.egid(m.egid)
    file_offset("offset", m.offset)
    if not 0 <= m.length <= limits.MAX_MESSAGE_BYTES // 2:
        # The answer must fit in one message, with room for its envelope.
        raise WireError(f"a read of {m.length} bytes")


def repair_extent(m: RepairExtent) -> None:
    ids.egid(m.egid)
    file_offset("offset", m.offset)
    file_offset("end", m.offset + len(m.data))


def egid_only(m: Any) -> None:
    """``DeleteEgroupFiles`` and ``StatEgroup``: one group id, nothing else."""
    ids.egid(m.egid)


def egroup_stat(m: EgroupStat) -> None:
    file_offset("size", m.size)


def egroup_list(m: EgroupList) -> None:
    items("egids", m.egids, limits.MAX_WIRE_LIST_ITEMS)
    for egid in m.egids:
        ids.egid(egid)


def extent_check(m: ExtentCheck) -> None:
    file_offset("offset", m.offset)
    file_offset("length", m.length)
    file_offset("end", m.offset + m.length)
    if not 0 <= m.checksum < 2**64:
        raise WireError(f"checksum {m.checksum} is not a 64-bit hash")


def pull_egroup(m: PullEgroup) -> None:
    ids.egid(m.egid)
    if not m.sources:
        raise WireError("a pull needs at least one source")
    nodes("sources", m.sources)
    items("checks", m.checks, limits.MAX_WIRE_LIST_ITEMS)


def pull_reply(m: PullReply) -> None:
    file_offset("bytes_copied", m.bytes_copied)
    index("bad_ranges", m.bad_ranges)


def fault_control(m: FaultControl) -> None:
    if m.op not in FAULT_OPS:
        raise WireError(f"fault op {m.op[:20]!r} is not one of {', '.join(FAULT_OPS)}")
    text("fault", m.fault)
    if m.fault_id and not (len(m.fault_id) <= 64 and m.fault_id.isalnum()):
        raise WireError("bad fault id")
    if m.op == "inject":
        faults.from_text(m.fault)  # a BadRequest becomes WireError in the codec


def fault_state(m: FaultState) -> None:
    items("faults", m.faults, limits.MAX_FAULTS)
    for f in m.faults:
        text("fault", f)
        faults.from_text(f)
    if not 0 <= m.pid < 2**31:
        raise WireError(f"pid {m.pid} out of range")


# --- what the transport checks around the messages ----------------------------------------
def one_way_batch(body: Any, sender: str, receiver: str) -> list[Any]:
    """The one-way messages (Raft's) of a ``/messages`` body from ``sender``: a bounded
    list of Raft messages, each from ``sender`` to ``receiver``; else ``WireError``,
    and the whole batch is refused."""
    if not isinstance(body, list):
        raise WireError("expected a batch of messages", "envelope")
    if len(body) > limits.MAX_RPC_BATCH_MESSAGES:
        raise WireError(f"a batch of {len(body)} messages", "envelope")
    for message in body:
        if not isinstance(message, ONE_WAY):
            raise WireError(f"{type(message).__name__} is not a one-way message", "envelope")
        if message.frm != sender or message.to != receiver:
            raise WireError(
                f"{type(message).__name__} from {message.frm} to {message.to} "
                f"came from {sender} to {receiver}",
                "invalid",
            )
    return body


ONE_WAY = (VoteRequest, VoteResponse, AppendRequest, AppendResponse, SnapshotRequest)
"""What travels one way (``Transport.send``): Raft's messages, nothing else."""
