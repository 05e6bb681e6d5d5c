"""The key layout of the metadata key space: every prefix is spelled here and nowhere else.

Keys sort so that a prefix scan is a range: ``vmap/<vdisk>/<index:010d>`` keeps a block
map in offset order. ``VALUE_TYPES`` says what kind of value each prefix holds; the
state machine refuses anything else.
"""

from __future__ import annotations

import json
from typing import Any

from fabric import limits
from fabric.metadata.records import (
    ContainerRecord,
    DiskRecord,
    EgroupIntent,
    EgroupRecord,
    EventRecord,
    ExtentRecord,
    ImageRecord,
    MemberRecord,
    NodeRecord,
    RebuildSettings,
    ScrubSettings,
    StripRecord,
    TaskRecord,
    TokenRecord,
    VdiskRecord,
)

NODE = "node/"
CONTAINER = "container/"
VDISK = "vdisk/"
VDISK_NAME = "vdisk-name/"
VMAP = "vmap/"
EXTENT = "extent/"
EGROUP = "egroup/"
EGROUP_INTENT = "egroup-intent/"
EGROUP_DROPPED = "egroup-dropped/"
STRIP = "strip/"
IMAGE = "image/"
IMAGE_NAME = "image-name/"
TASK = "task/"
KV = "kv/"
DISK = "disk/"
MEMBER = "member/"
TOKEN = "token/"
EVENT = "event/"
EVENT_SEQ = "event-seq/"
SETTINGS = "settings/"
REBUILD_SETTINGS = SETTINGS + "rebuild"
SCRUB_SETTINGS = SETTINGS + "scrub"
EVENT_NEXT = EVENT_SEQ + "next"
"""The sequence number the next event gets (events are ``event/<seq:012d>``)."""

VALUE_TYPES: dict[str, type | tuple[type, ...] | None] = {
    NODE: NodeRecord,
    CONTAINER: ContainerRecord,
    VDISK: VdiskRecord,
    VDISK_NAME: str,
    VMAP: str,
    EXTENT: ExtentRecord,
    EGROUP: EgroupRecord,
    EGROUP_INTENT: EgroupIntent,
    EGROUP_DROPPED: int,
    STRIP: StripRecord,
    IMAGE: ImageRecord,
    IMAGE_NAME: str,
    TASK: TaskRecord,
    KV: None,
    DISK: DiskRecord,
    MEMBER: MemberRecord,
    TOKEN: TokenRecord,
    EVENT: EventRecord,
    EVENT_SEQ: int,
    SETTINGS: (RebuildSettings, ScrubSettings),
}
"""Prefix -> the type of its values (None: user JSON data, checked by ``json_like``)."""


def namespace(key: str) -> str:
    """The prefix of ``key`` (up to and including its first "/"), or "" if it has none."""
    cut = key.find("/")
    return key[: cut + 1] if cut > 0 else ""


def node_key(node_id: str) -> str:
    return NODE + node_id


def container_key(name: str) -> str:
    return CONTAINER + name


def vdisk_key(vdisk_id: str) -> str:
    return VDISK + vdisk_id


def vdisk_name_key(name: str) -> str:
    return VDISK_NAME + name


def map_prefix(vdisk_id: str) -> str:
    return f"{VMAP}{vdisk_id}/"


def map_key(vdisk_id: str, index: int) -> str:
    return f"{VMAP}{vdisk_id}/{index:010d}"


def map_index(key: str) -> tuple[str, int]:
    """(vdisk id, extent index) of a block-map key."""
    vdisk_id, _, index = key[len(VMAP) :].rpartition("/")
    return vdisk_id, int(index)


def extent_key(container: str, extent_id: str) -> str:
    return f"{EXTENT}{container}/{extent_id}"


def extent_ref(key: str) -> tuple[str, str]:
    """(container, extent id) of an extent key."""
    container, _, extent_id = key[len(EXTENT) :].partition("/")
    return container, extent_id


def egroup_key(egid: str) -> str:
    return EGROUP + egid


def intent_key(egid: str) -> str:
    return EGROUP_INTENT + egid


def rebuild_claim(egid: str) -> str:
    """The intent id under which a rebuilt copy of ``egid`` is claimed."""
    return f"rebuild/{egid}"


def dropped_key(egid: str) -> str:
    return EGROUP_DROPPED + egid


def strip_key(strip_id: str) -> str:
    return STRIP + strip_id


def image_key(image_id: str) -> str:
    return IMAGE + image_id


def image_name_key(name: str) -> str:
    return IMAGE_NAME + name


def task_key(task_id: str) -> str:
    return TASK + task_id


def member_key(node: str) -> str:
    return MEMBER + node


def token_key(token_id: str) -> str:
    return TOKEN + token_id


def disk_key(node: str, disk: str) -> str:
    return f"{DISK}{node}/{disk}"


def event_key(seq: int) -> str:
    return f"{EVENT}{seq:012d}"


def kv_key(key: str) -> str:
    return KV + key


def kv_value_bytes(value: Any) -> int:
    """The size a kv value counts for: its compact JSON text, every non-ASCII character
    escaped. A pure function of the value, so every node measures the same."""
    return len(json.dumps(value, separators=(",", ":")))


def kv_entry_bytes(key: str, value: Any) -> int:
    """What one kv entry counts against ``limits.KV_TOTAL_BYTES``."""
    key_bytes = len(key.encode("utf-8", "surrogatepass"))
    return key_bytes + kv_value_bytes(value) + limits.KV_ENTRY_OVERHEAD_BYTES


MAX_JSON_DEPTH = 32


def json_like(value: Any, depth: int = 0) -> bool:
    """True if ``value`` is plain JSON data: what the user's ``kv/`` space may hold."""
    if depth > MAX_JSON_DEPTH:
        return False
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return all(json_like(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and json_like(v, depth + 1) for k, v in value.items())
    return False
