"""What the simulator's checkers read from the metadata records, in one place.

The checkers compare metadata with what the simulated disks hold, and recount what
accounting should say. This is the only module of theirs that knows which records
matter for that and which of their fields (extent groups, extents, strips and intents,
see ``fabric.metadata.records``; key prefixes from ``fabric.metadata.keys``): when
records change, this module changes and the checkers do not.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fabric.metadata import keys
from fabric.metadata.records import EgroupIntent, EgroupRecord, ExtentRecord, StripRecord

if TYPE_CHECKING:
    from fabric.metadata.state import MetadataState


@dataclass(frozen=True, slots=True)
class StoredExtent:
    """Where an extent's stored bytes are, and what they must hash to."""

    key: str
    egid: str
    offset: int
    stored_len: int
    checksum: int


@dataclass(frozen=True, slots=True)
class GroupCopies:
    """An extent group as metadata sees it: the nodes that hold a copy, and what each
    copy must contain."""

    egid: str
    replicas: tuple[str, ...]
    extents: tuple[StoredExtent, ...]
    min_bytes: int
    """Each copy is at least this long (a parity group: its strip's parity bytes)."""
    in_use: bool
    """Holds live extents, or is parity of a strip that does. A group not in use may
    have its files deleted before its record goes (collection deletes files first)."""


@dataclass(frozen=True, slots=True)
class Referenced:
    groups: tuple[GroupCopies, ...]
    dangling: tuple[StoredExtent, ...]
    """Extents whose extent group has no record."""
    claimed: tuple[tuple[str, str], ...]
    """(egid, node) of files an open intent claims: a write in flight, or garbage of a
    writer that died, until the claim times out and the scanner collects it."""


def referenced(state: MetadataState) -> Referenced:
    """Every extent group record, with the extents metadata says live in it."""
    by_group: dict[str, list[StoredExtent]] = defaultdict(list)
    for key, item in state.scan(keys.EXTENT):
        ext: ExtentRecord = item.value
        by_group[ext.egroup].append(
            StoredExtent(key, ext.egroup, ext.offset, ext.stored_len, ext.checksum)
        )
    strips: dict[str, StripRecord] = {
        item.value.id: item.value for _, item in state.scan(keys.STRIP)
    }
    live_strips = {
        strip.id for strip in strips.values() if any(by_group.get(m.egid) for m in strip.data)
    }
    groups = []
    for _, item in state.scan(keys.EGROUP):
        eg: EgroupRecord = item.value
        extents = tuple(by_group.pop(eg.egid, ()))
        strip = strips.get(eg.strip)
        min_bytes = max((e.offset + e.stored_len for e in extents), default=0)
        if eg.parity and strip is not None:
            min_bytes = strip.parity_bytes
        in_use = bool(extents) or (eg.parity and eg.strip in live_strips)
        groups.append(GroupCopies(eg.egid, eg.replicas, extents, min_bytes, in_use))
    dangling = tuple(e for extents in by_group.values() for e in extents)
    claimed: list[tuple[str, str]] = []
    for _, item in state.scan(keys.EGROUP_INTENT):
        intent: EgroupIntent = item.value
        claimed.extend((f.egid, f.node) for f in intent.files)
    return Referenced(tuple(groups), dangling, tuple(claimed))


def physical_bytes(state: MetadataState) -> int:
    """Bytes every copy of every group takes, recounted from the records (no stats):
    replicated groups count each replica, parity counts once per parity member."""
    total = 0
    for _, item in state.scan(keys.EGROUP):
        eg: EgroupRecord = item.value
        if not eg.parity:
            total += eg.size * len(eg.replicas)
    for _, item in state.scan(keys.STRIP):
        strip: StripRecord = item.value
        total += strip.parity_bytes * len(strip.parity)
    return total
