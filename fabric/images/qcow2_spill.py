"""Whole file clusters kept in the spill area until a table says what they are.

The qcow2 reader stages the bytes of a gap cluster as they arrive and puts the cluster in
the injected ``Spill`` once it is complete, keyed by its file offset. Keys are always
cluster aligned, so a later mapping finds its bytes with one ``take`` per cluster. A
cluster that is not there any more was used already (or was never a gap): for a well-formed
image that cannot happen, so the mapping that asks for it is refused.
"""

from __future__ import annotations

from fabric.images.base import ImageError, Spill
from fabric.images.qcow2_plan import describe
from fabric.images.qcow2_tables import Item


class ClusterShelf:
    """Stage, keep and hand back whole clusters, within ``limit_bytes``."""

    def __init__(self, spill: Spill, limit_bytes: int, cluster_bytes: int) -> None:
        self._spill = spill
        self._limit_bytes = limit_bytes
        self._cluster_bytes = cluster_bytes
        self._stage = bytearray()

    def stage(self, piece: memoryview) -> None:
        """Collect bytes of the gap cluster being read."""
        self._stage += piece

    def seal(self, end: int) -> None:
        """The stream reached file offset ``end``: keep the staged cluster if it is whole."""
        if not self._stage or end % self._cluster_bytes:
            return
        key = end - len(self._stage)
        assert key % self._cluster_bytes == 0, "a gap cluster was staged from its middle"
        if self._spill.held_bytes + len(self._stage) > self._limit_bytes:
            raise ImageError(
                f"qcow2: data placed before the tables that map it exceeds the spill limit "
                f"of {self._limit_bytes} bytes (max_spill_bytes)"
            )
        self._spill.put(key, bytes(self._stage))
        self._stage.clear()

    def take(self, item: Item, key: int, keep: bool = False) -> bytes:
        """The kept cluster at ``key``, which ``item`` needs; ``keep`` leaves it in place."""
        try:
            data = self._spill.take(key)
        except KeyError:
            raise ImageError(
                f"qcow2: {describe(item)} is mapped twice or overlaps metadata "
                f"(cluster {key:#x} is already used)"
            ) from None
        if keep:
            self._spill.put(key, data)
        return data

    def drop_all(self) -> None:
        """Nothing can map a kept cluster any more: forget them all."""
        self._stage.clear()
        held = self._spill.keys()  # a Spill, not a dict: keys() is its listing method
        for key in held:
            self._spill.take(key)
