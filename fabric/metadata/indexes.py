"""Indexes the metadata state machine keeps beside its key space.

Every reader that used to scan the whole key space (the scanner, accounting, the cluster
view, ``/metrics``) asks one of these instead, so its cost follows its answer, not the
size of the store. They are derived data: ``MetadataState`` updates them on every put
and delete from the old and new value of the key, and rebuilds them when it restores a
snapshot; nothing else writes them, and they are never persisted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from fabric.metadata import keys
from fabric.metadata.records import (
    EgroupIntent,
    EgroupRecord,
    ExtentRecord,
    ImageRecord,
    StripRecord,
)


def _count(counter: Counter[Any], key: Any, delta: int) -> None:
    counter[key] += delta
    if counter[key] <= 0:
        del counter[key]


def _live_replicated(eg: EgroupRecord) -> bool:
    """A group whose resiliency is its replica count: holds data, not erasure coded."""
    return eg.extents > 0 and not eg.strip and not eg.parity


class Indexes:
    def __init__(self) -> None:
        self.open_egroups: set[str] = set()
        """Groups that are not sealed (still written by their owner)."""
        self.collectable: set[str] = set()
        """Sealed groups with no live extent, not part of a strip."""
        self.compactable: set[str] = set()
        """Sealed groups more dead than live (parity excluded)."""
        self.ec_pending: defaultdict[str, set[str]] = defaultdict(set)
        """container -> groups holding data that are not in a strip yet."""
        self.egroups_on: defaultdict[str, set[str]] = defaultdict(set)
        """node -> egids with a replica there."""
        self.replica_counts: defaultdict[str, Counter[int]] = defaultdict(Counter)
        """container -> how many live replicated groups have each replica count."""
        self.replica_counts_on: defaultdict[str, defaultdict[str, Counter[int]]] = defaultdict(
            lambda: defaultdict(Counter)
        )
        """node -> container -> replica counts of the live replicated groups on that node:
        what one node's loss does to resiliency, without visiting its groups."""
        self.extents_in: defaultdict[str, set[str]] = defaultdict(set)
        """egid -> extent keys of the live extents stored in it."""
        self.strips_on: defaultdict[str, set[str]] = defaultdict(set)
        """node -> strip ids with a member there."""
        self.strip_widths: defaultdict[str, Counter[tuple[int, int]]] = defaultdict(Counter)
        """container -> Counter of (members, k) over its strips."""
        self.strip_widths_on: defaultdict[str, defaultdict[str, Counter[tuple[int, int]]]] = (
            defaultdict(lambda: defaultdict(Counter))
        )
        """node -> container -> (members, k) of the strips with a member there."""
        self.strip_live_groups: Counter[str] = Counter()
        """strip id -> its data groups that still hold a live extent."""
        self.empty_strips: set[str] = set()
        """Strips whose data groups hold nothing: the EC job collects them."""
        self._strips: set[str] = set()
        self.block_maps: defaultdict[str, dict[int, str]] = defaultdict(dict)
        """vdisk id -> extent index -> extent id."""
        self.pending_images: set[str] = set()
        self.short_egroups: set[str] = set()
        """Groups that lost a copy with a disk (``lost_copies``) not made again yet."""
        self.intents_on: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
        """(egid, node) -> ids of the intents that claim that file."""
        self.kv_sizes: dict[str, int] = {}
        """kv key -> what it counts against the user's kv quota (``keys.kv_entry_bytes``)."""
        self.kv_bytes = 0
        """The sum of ``kv_sizes``: the user kv space's use of ``limits.KV_TOTAL_BYTES``."""

    # --- maintenance ------------------------------------------------------------------------
    def update(self, space: str, key: str, old: Any, new: Any) -> None:
        """``key`` (in namespace ``space``) changed from ``old`` to ``new`` (None: absent)."""
        if space == keys.EGROUP:
            self._egroup(old, new)
        elif space == keys.EXTENT:
            self._extent(key, old, new)
        elif space == keys.VMAP:
            vdisk_id, index = keys.map_index(key)
            if new is None:
                block_map = self.block_maps[vdisk_id]
                block_map.pop(index, None)
                if not block_map:
                    del self.block_maps[vdisk_id]
            else:
                self.block_maps[vdisk_id][index] = new
        elif space == keys.STRIP:
            self._strip(old, new)
        elif space == keys.IMAGE:
            self._image(old, new)
        elif space == keys.EGROUP_INTENT:
            self._intent(old, new)

    def kv_set(self, key: str, value: Any) -> None:
        """User kv ``key`` now holds ``value`` (JSON null included: not an absence, so
        the kv space is not kept through ``update``)."""
        self.kv_drop(key)
        size = keys.kv_entry_bytes(key, value)
        self.kv_sizes[key] = size
        self.kv_bytes += size

    def kv_drop(self, key: str) -> None:
        self.kv_bytes -= self.kv_sizes.pop(key, 0)

    def _egroup(self, old: EgroupRecord | None, new: EgroupRecord | None) -> None:
        if old is not None:
            egid = old.egid
            self.open_egroups.discard(egid)
            self.collectable.discard(egid)
            self.compactable.discard(egid)
            self.short_egroups.discard(egid)
            self._discard(self.ec_pending, old.container, egid)
            for node in old.replicas:
                self._discard(self.egroups_on, node, egid)
            if old.strip and not old.parity and old.extents:
                self._strip_live(old.strip, -1)
            if _live_replicated(old):
                _count(self.replica_counts[old.container], len(old.replicas), -1)
                for node in old.replicas:
                    _count(self.replica_counts_on[node][old.container], len(old.replicas), -1)
        if new is None:
            return
        egid = new.egid
        if new.strip and not new.parity and new.extents:
            self._strip_live(new.strip, +1)
        for node in new.replicas:
            self.egroups_on[node].add(egid)
        if new.lost_copies:
            self.short_egroups.add(egid)
        if not new.sealed:
            self.open_egroups.add(egid)
        elif new.extents == 0 and not new.strip and not new.parity:
            self.collectable.add(egid)
        elif new.dead_bytes > new.live_bytes and not new.parity:
            self.compactable.add(egid)
        if new.extents and not new.strip and not new.parity:
            self.ec_pending[new.container].add(egid)
        if _live_replicated(new):
            _count(self.replica_counts[new.container], len(new.replicas), +1)
            for node in new.replicas:
                _count(self.replica_counts_on[node][new.container], len(new.replicas), +1)

    def _extent(self, key: str, old: ExtentRecord | None, new: ExtentRecord | None) -> None:
        if old is not None:
            self._discard(self.extents_in, old.egroup, key)
        if new is not None:
            self.extents_in[new.egroup].add(key)

    def _strip_live(self, strip_id: str, delta: int) -> None:
        self.strip_live_groups[strip_id] += delta
        if self.strip_live_groups[strip_id] <= 0:
            del self.strip_live_groups[strip_id]
            if strip_id in self._strips:
                self.empty_strips.add(strip_id)
        else:
            self.empty_strips.discard(strip_id)

    def _strip(self, old: StripRecord | None, new: StripRecord | None) -> None:
        if old is not None:
            self._strips.discard(old.id)
            self.empty_strips.discard(old.id)
            for member in old.members:
                self._discard(self.strips_on, member.node, old.id)
            width = (len(old.members), old.k)
            _count(self.strip_widths[old.container], width, -1)
            for node in {m.node for m in old.members}:
                _count(self.strip_widths_on[node][old.container], width, -1)
        if new is not None:
            self._strips.add(new.id)
            if not self.strip_live_groups.get(new.id):
                self.empty_strips.add(new.id)
            for member in new.members:
                self.strips_on[member.node].add(new.id)
            width = (len(new.members), new.k)
            _count(self.strip_widths[new.container], width, +1)
            for node in {m.node for m in new.members}:
                _count(self.strip_widths_on[node][new.container], width, +1)

    def _image(self, old: ImageRecord | None, new: ImageRecord | None) -> None:
        if old is not None:
            self.pending_images.discard(old.id)
        if new is not None and new.state == "PENDING":
            self.pending_images.add(new.id)

    def _intent(self, old: EgroupIntent | None, new: EgroupIntent | None) -> None:
        if old is not None:
            for f in old.files:
                self._discard(self.intents_on, (f.egid, f.node), old.id)
        if new is not None:
            for f in new.files:
                self.intents_on[(f.egid, f.node)].add(new.id)

    @staticmethod
    def _discard(index: defaultdict[Any, set[Any]], key: Any, value: Any) -> None:
        members = index.get(key)
        if members is None:
            return
        members.discard(value)
        if not members:
            del index[key]
