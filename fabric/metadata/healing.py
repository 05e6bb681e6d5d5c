"""The event log and the healing settings, as parts of the replicated state.

Events live at ``event/<seq:012d>`` with consecutive sequence numbers (``event-seq/next``
holds the next one), so a reader that saw up to ``since`` asks for exactly the keys
after it, without scanning. The log keeps the last ``limits.EVENTS_KEPT``: adding one
deletes the one that many places before it, so it stays bounded whatever happens.
Sequence numbers are assigned on apply, in log order: every node numbers alike.

Settings (``settings/rebuild``, ``settings/scrub``) are absent until changed at runtime;
until then the cluster config's values hold (``effective_*``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fabric import limits
from fabric.metadata import keys
from fabric.metadata.commands import (
    HealCommand,
    RecordEvents,
    SetDiskState,
    SetMember,
    SetNodeDrain,
    SetRebuildSettings,
    SetScrubSettings,
)
from fabric.metadata.records import (
    DiskRecord,
    EventRecord,
    MemberRecord,
    NodeRecord,
    RebuildSettings,
    ScrubSettings,
)
from fabric.metadata.refusal import Refused

if TYPE_CHECKING:
    from fabric.metadata.state import MetadataState


def apply(state: MetadataState, index: int, cmd: HealCommand) -> Any:
    match cmd:
        case RecordEvents():
            return [record_event(state, index, event) for event in cmd.events]
        case SetRebuildSettings():
            state.put(index, keys.REBUILD_SETTINGS, cmd.settings)
            return index
        case SetScrubSettings():
            state.put(index, keys.SCRUB_SETTINGS, cmd.settings)
            return index
        case SetDiskState():
            return _set_disk_state(state, index, cmd)
        case SetNodeDrain():
            return _set_drain(state, index, cmd)
        case SetMember():
            return _set_member(state, index, cmd)


def _set_member(state: MetadataState, index: int, cmd: SetMember) -> int:
    m = cmd.member
    state.put(index, keys.member_key(m.id), m)
    if m.removed:
        message = f"node {m.id} left the cluster"
    else:
        message = f"node {m.id} joined the cluster at {m.host}:{m.port}"
    record_event(state, index, EventRecord(0, cmd.at_wall, "membership", m.id, m.id, message))
    return index


def members(state: MetadataState) -> dict[str, MemberRecord]:
    """Nodes added or removed at runtime, by id."""
    return {item.value.id: item.value for _, item in state.scan(keys.MEMBER)}


def _set_drain(state: MetadataState, index: int, cmd: SetNodeDrain) -> int:
    key = keys.node_key(cmd.node_id)
    old: NodeRecord | None = state.value(key)
    if old is None:
        raise Refused("not_found", f"node {cmd.node_id} never registered")
    state.put(index, key, replace(old, draining=cmd.draining))
    if old.draining != cmd.draining:
        what = "draining: its data moves to other nodes" if cmd.draining else "no longer draining"
        record_event(
            state,
            index,
            EventRecord(
                0, cmd.at_wall, "node_drain", cmd.node_id, cmd.node_id, f"node {cmd.node_id} {what}"
            ),
        )
    return index


def draining_nodes(state: MetadataState) -> set[str]:
    return {n for n, r in state.nodes().items() if r.draining}


def _set_disk_state(state: MetadataState, index: int, cmd: SetDiskState) -> int:
    key = keys.disk_key(cmd.node, cmd.disk)
    old: DiskRecord | None = state.value(key)
    was = "UP" if old is None else old.state
    state.put(
        index,
        key,
        DiskRecord(
            cmd.node,
            cmd.disk,
            cmd.state,
            cmd.at_wall,
            cmd.reason,
            cmd.used_bytes,
            cmd.capacity_bytes,
        ),
    )
    if was != cmd.state:
        why = f" ({cmd.reason})" if cmd.reason else ""
        severity = {"UP": "info", "FULL": "warning"}.get(cmd.state, "error")
        message = f"disk {cmd.disk} of {cmd.node}: {was} -> {cmd.state}{why}"
        record_event(
            state,
            index,
            EventRecord(0, cmd.at_wall, "disk_state", cmd.node, cmd.disk, message, severity),
        )
    return index


def disks_of(state: MetadataState, node: str) -> list[DiskRecord]:
    """The disk records a node reported (a disk never reported is UP)."""
    return [item.value for _, item in state.scan(f"{keys.DISK}{node}/")]


def unusable_disks(state: MetadataState, node: str, disks: tuple[str, ...]) -> dict[str, str]:
    """disk -> FULL or FAILED, for those of ``disks`` of ``node`` that take no new data
    (one lookup per disk: placement asks this of every candidate)."""
    out = {}
    for name in disks:
        record: DiskRecord | None = state.value(keys.disk_key(node, name))
        if record is not None and record.state != "UP":
            out[name] = record.state
    return out


def record_event(state: MetadataState, index: int, event: EventRecord) -> int:
    """Append ``event`` to the log (trimming the oldest); its sequence number."""
    seq = next_seq(state)
    state.put(index, keys.event_key(seq), replace(event, seq=seq))
    state.put(index, keys.EVENT_NEXT, seq + 1)
    state.delete(keys.event_key(seq - limits.EVENTS_KEPT))
    return seq


def next_seq(state: MetadataState) -> int:
    value: int | None = state.value(keys.EVENT_NEXT)
    return 1 if value is None else value


def events(state: MetadataState, since: int = 0, limit: int = 100) -> list[EventRecord]:
    """Events after sequence number ``since``, oldest first, at most ``limit``."""
    end = next_seq(state)
    first = max(since + 1, end - limits.EVENTS_KEPT, 1)
    out = []
    for seq in range(first, min(end, first + max(0, limit))):
        record: EventRecord | None = state.value(keys.event_key(seq))
        if record is not None:
            out.append(record)
    return out


def latest_events(state: MetadataState, limit: int) -> list[EventRecord]:
    """The last ``limit`` events, oldest first."""
    return events(state, max(0, next_seq(state) - 1 - limit), limit)


def effective_rebuild(state: MetadataState, configured: RebuildSettings) -> RebuildSettings:
    value: RebuildSettings | None = state.value(keys.REBUILD_SETTINGS)
    return configured if value is None else value


def effective_scrub(state: MetadataState, configured: ScrubSettings) -> ScrubSettings:
    value: ScrubSettings | None = state.value(keys.SCRUB_SETTINGS)
    return configured if value is None else value


def lost_nodes(state: MetadataState, settings: RebuildSettings, now_wall: float) -> set[str]:
    """Nodes DOWN for at least ``delay_s``: what they held is rebuilt elsewhere."""
    return {
        node
        for node, record in state.nodes().items()
        if record.state == "DOWN" and now_wall - record.state_since >= settings.delay_s
    }
