"""Is a command well formed? Checked when it is proposed and again when it is applied.

The wire codec already checked every field's type when the log entry was decoded; this
module checks what types cannot say: counts and offsets are not negative, names are
names, extent-group and node ids follow their grammar (``fabric.ids``) wherever a
field of that name appears, states are states, a policy is a policy, a raw key-space
write stays in the user's ``kv/`` space (or is a legacy catalog write, see
``fabric.metadata.legacy``).
A malformed command is refused as a result, so no log entry can stop the state machine.

``problem`` returns a reason or None; it never raises for any input.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fabric import ids, limits
from fabric.errors import BadRequest
from fabric.extents.policy import ContainerPolicy, check_name, check_policy
from fabric.images.base import SECTOR_BYTES
from fabric.images.declared import FORMATS
from fabric.metadata import keys
from fabric.metadata.commands import (
    AddReplica,
    Batch,
    Command,
    CommitPackedStrip,
    CommitStrip,
    CreateContainer,
    CreateImage,
    CreateVdisk,
    Delete,
    ExpireImage,
    MarkCopiesLost,
    Put,
    RecordEvents,
    RegisterNode,
    SetDiskState,
    SetMember,
    SetNodeState,
    SetRebuildSettings,
    SetScrubSettings,
    SetToken,
    UpdateImage,
    UpdateTask,
    WriteExtents,
)
from fabric.metadata.records import (
    DISK_STATES,
    EVENT_KINDS,
    EVENT_SEVERITIES,
    IMAGE_STATES,
    IMAGE_TYPES,
    NODE_STATES,
    TASK_STATES,
    ImageRecord,
    TaskRecord,
)
from fabric.tokens import ROLES, TOKEN_ID

MAX_INT = 2**64 - 1
MAX_TEXT_BYTES = 8 * limits.KiB
"""Longest string field of a command (error messages and URLs included)."""
LEGACY_SPACES = (keys.IMAGE, keys.IMAGE_NAME, keys.TASK)
"""Where release 0.1 wrote catalog records with raw Puts; its logs still replay."""
_ID_FIELDS = {
    "egid": ids.egid,
    "from_egid": ids.egid,
    "egids": ids.egid,
    "replicas": ids.node_id,
    "to_node": ids.node_id,
    "vdisk_id": ids.record_id,
    "image_id": ids.record_id,
    "strip_id": ids.record_id,
}
"""Fields that hold an id wherever they appear (in a command or a record inside it, and
each item of a tuple of them): ids that later name files and peers are parsed once here,
before they reach the log. (``node``, ``from_node``, ``lost`` and ``owner`` stay free:
"" has a meaning there.)"""


def problem(command: Any) -> str | None:
    """Why ``command`` is malformed, or None when it is well formed."""
    if not isinstance(command, Command):
        return f"not a command: {type(command).__name__}"
    try:
        if isinstance(command, Put | Delete):
            _raw_op(command)  # the hot path (every kv write): checked directly
        else:
            _fields(command, depth=0)
            _specific(command)
    except BadRequest as exc:
        return f"{type(command).__name__}: {exc.message}"
    return None


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _fields(obj: Any, depth: int) -> None:
    """Numbers in range and strings bounded, everywhere inside a command."""
    if depth > 6:
        raise BadRequest("nested too deep")
    for name in _names(type(obj)):
        if isinstance(obj, Put) and name == "value":
            continue  # user data (negative numbers and all): checked by _raw_key
        _value(name, getattr(obj, name), depth)


def _value(name: str, value: Any, depth: int) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if not 0 <= value <= MAX_INT:
            raise BadRequest(f"{name} out of range: {value}")
    elif isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise BadRequest(f"{name} must be a finite non-negative number")
    elif isinstance(value, str):
        if len(value) > MAX_TEXT_BYTES:
            raise BadRequest(f"{name} longer than {MAX_TEXT_BYTES} characters")
        parse = _ID_FIELDS.get(name)
        if parse is not None:
            parse(value)
    elif isinstance(value, tuple):
        for item in value:
            _value(name, item, depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        _fields(value, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _value(name, key, depth + 1)
            _value(name, item, depth + 1)


def _raw_op(op: Put | Delete) -> None:
    if op.expect_version is not None and not 0 <= op.expect_version <= MAX_INT:
        raise BadRequest(f"expect_version out of range: {op.expect_version}")
    _raw_key(op)


def _specific(command: Any) -> None:
    match command:
        case Batch(commands):
            if not commands:
                raise BadRequest("an empty batch")
            for op in commands:
                if not isinstance(op, Put | Delete):
                    raise BadRequest(f"a batch holds only Put and Delete, not {type(op).__name__}")
                _raw_op(op)
        case RegisterNode():
            check_name("node", command.node_id)
        case SetNodeState():
            if command.state not in NODE_STATES:
                raise BadRequest(f"node state {command.state!r}")
        case CreateContainer():
            check_name("container", command.name)
            policy_from_record(command.policy)
        case CreateVdisk():
            check_name("vdisk", command.name)
            if not 0 < command.size <= limits.MAX_VDISK_BYTES:
                raise BadRequest(f"vdisk size {command.size}")
        case WriteExtents():
            for m in command.maps:
                if m.index >= limits.MAX_VDISK_BYTES:
                    raise BadRequest(f"extent index {m.index}")
        case CommitStrip():
            if not command.data or not command.parity or command.chunk_bytes <= 0:
                raise BadRequest("a strip needs data, parity and a chunk size")
        case CommitPackedStrip():
            _packed(command)
        case CreateImage():
            image(command.image)
            if command.image.state != "PENDING":
                raise BadRequest("a new image is PENDING")
            if command.task is not None:
                task(command.task)
        case UpdateImage():
            image(command.image)
        case UpdateTask():
            task(command.task)
        case ExpireImage():
            if not command.image_id or not command.reason:
                raise BadRequest("an expiry names its image and why")
        case AddReplica():
            check_name("node", command.to_node)
            if command.lost == command.to_node:
                raise BadRequest("a copy is rebuilt on another node than the lost one")
        case RecordEvents():
            if not 0 < len(command.events) <= limits.MAX_EVENTS_PER_COMMAND:
                raise BadRequest(f"{len(command.events)} events in one command")
            for event in command.events:
                if event.kind not in EVENT_KINDS:
                    raise BadRequest(f"event kind {event.kind!r}")
                if event.severity not in EVENT_SEVERITIES:
                    raise BadRequest(f"event severity {event.severity!r}")
        case SetRebuildSettings():
            if command.settings.per_node < 1:
                raise BadRequest("rebuild per_node must be at least 1")
        case SetToken():
            t = command.token
            if not TOKEN_ID.match(t.id) or t.role not in ROLES:
                raise BadRequest(f"token id {t.id[:40]!r} or role {t.role[:20]!r}")
            if len(t.secret_sha256) != 64 or not 0 < len(t.name) <= 128:
                raise BadRequest("a token needs a name of 1..128 characters and a SHA-256")
        case SetMember():
            check_name("node", command.member.id)
            if not 1 <= command.member.port <= 65535 or not command.member.disks:
                raise BadRequest("a member needs a TCP port and at least one disk")
        case SetDiskState():
            if command.state not in DISK_STATES:
                raise BadRequest(f"disk state {command.state!r}")
        case MarkCopiesLost():
            if not 0 < len(command.egids) <= limits.MAX_LOST_COPIES_PER_COMMAND:
                raise BadRequest(f"{len(command.egids)} groups in one MarkCopiesLost")
        case SetScrubSettings():
            if command.settings.cycle_s <= 0:
                raise BadRequest("scrub cycle_s must be positive")


def _packed(command: CommitPackedStrip) -> None:
    if not command.data or not command.parity or command.chunk_bytes <= 0:
        raise BadRequest("a strip needs data, parity and a chunk size")
    if command.length % command.chunk_bytes or command.length <= 0:
        raise BadRequest("a strip covers a whole number of chunks")
    if command.parity_bytes <= 0:
        raise BadRequest("a strip's parity groups hold its parity")
    ends: dict[int, int] = {}
    for packed in sorted(command.extents, key=lambda p: (p.member, p.move.offset)):
        move = packed.move
        if not 0 <= packed.member < len(command.data):
            raise BadRequest(f"packed extent names data member {packed.member}")
        if move.container != command.container:
            raise BadRequest("a packed extent moves within its container")
        if move.offset < 0 or move.length <= 0 or move.offset + move.length > command.length:
            raise BadRequest(f"packed extent at {move.offset}+{move.length} outside the strip")
        if move.offset < ends.get(packed.member, 0):
            raise BadRequest(f"packed extents overlap at {move.offset} of member {packed.member}")
        ends[packed.member] = move.offset + move.length


def _raw_key(op: Put | Delete) -> None:
    if not op.key or len(op.key.encode()) > limits.MAX_KEY_BYTES + len(keys.KV):
        raise BadRequest("key length")
    space = keys.namespace(op.key)
    if space == keys.KV:
        if isinstance(op, Put) and not keys.json_like(op.value):
            raise BadRequest("a kv value must be plain JSON data")
        return
    if space not in LEGACY_SPACES:
        raise BadRequest(f"raw writes may only address {keys.KV!r} keys, not {op.key!r}")


def policy_from_record(data: dict[str, Any]) -> ContainerPolicy:
    """The policy a CreateContainer carries, checked like a user's request."""
    unknown = set(data) - set(ContainerPolicy.__dataclass_fields__)
    if unknown:
        raise BadRequest(f"unknown policy field {sorted(unknown)[0]!r}")
    try:
        policy = ContainerPolicy.from_dict(data)
    except TypeError as exc:
        raise BadRequest(str(exc)) from None
    check_policy(policy)
    return policy


def image(record: ImageRecord) -> None:
    check_name("image", record.name)
    check_name("container", record.container)
    if record.state not in IMAGE_STATES:
        raise BadRequest(f"image state {record.state!r}")
    if record.image_type not in IMAGE_TYPES:
        raise BadRequest(f"image type {record.image_type!r}")
    if record.checksum is not None and record.checksum.type not in ("sha256", "sha1"):
        raise BadRequest(f"checksum type {record.checksum.type!r}")
    if record.declared_format is not None and record.declared_format not in FORMATS:
        raise BadRequest(f"declared format {record.declared_format!r}")
    if not 0 <= record.padded_bytes < SECTOR_BYTES:
        raise BadRequest(f"padded bytes {record.padded_bytes}")
    if min(record.source_bytes, record.stored_bytes, record.logical_bytes) < 0:
        raise BadRequest("image byte counts must not be negative")


def task(record: TaskRecord) -> None:
    if record.state not in TASK_STATES:
        raise BadRequest(f"task state {record.state!r}")
    if not 0.0 <= record.progress <= 1.0:
        raise BadRequest("task progress must be within 0..1")
