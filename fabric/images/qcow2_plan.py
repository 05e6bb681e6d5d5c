"""What the qcow2 reader still expects to find further down the file, in file order.

Every table the reader has decoded leaves host ranges it has not reached yet: L2 tables to
read, data runs to emit, compressed clusters to inflate. ``HostPlan`` keeps them in a heap
ordered by host offset and hands each out when the stream reaches its first byte. Handing
out in file order is also where overlaps are caught: two things claiming the same host
bytes (an L2 table that is also a data cluster, a cluster mapped twice, a loop) are refused.
The only overlap qcow2 allows is a compressed cluster starting inside the last sector of
the previous compressed cluster, because compressed sizes are rounded up to sectors.

``MetadataBudget`` counts what the reader keeps in memory about the image (pending items,
table and compressed-cluster buffers) against ``limits.max_metadata_bytes``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from fabric.images.base import ImageError, MetadataBudget
from fabric.images.qcow2_tables import Item, Packed, TableRef

ITEM_COST_BYTES = 192
"""What one pending mapping costs in memory, roughly (heap tuple + record)."""
SECTOR_BYTES = 512


class HostPlan:
    """Pending items keyed by host offset, handed out in file order without overlaps."""

    def __init__(self, budget: MetadataBudget) -> None:
        self._budget = budget
        self._heap: list[tuple[int, int, Item]] = []
        self._seq = 0
        self._claimed_end = 0
        """End of the furthest host range handed out so far."""
        self._claimed_by: Item | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, item: Item) -> None:
        self._budget.charge(ITEM_COST_BYTES, "the table of pending mappings")
        heapq.heappush(self._heap, (item.host, self._seq, item))
        self._seq += 1

    def next_start(self) -> int | None:
        """Host offset of the next item, if any."""
        return self._heap[0][0] if self._heap else None

    def first(self) -> Item | None:
        return self._heap[0][2] if self._heap else None

    def due(self, position: int) -> Iterator[Item]:
        """Hand out (and forget) the items that start at or before ``position``."""
        while self._heap and self._heap[0][0] <= position:
            _, _, item = heapq.heappop(self._heap)
            self._budget.release(ITEM_COST_BYTES)
            self._claim(item)
            yield item

    def _claim(self, item: Item) -> None:
        previous = self._claimed_by
        allowed = self._claimed_end
        if isinstance(item, Packed) and isinstance(previous, Packed):
            allowed -= SECTOR_BYTES - 1  # may share the previous one's last sector
        if previous is not None and item.host < allowed:
            raise ImageError(f"qcow2: {describe(item)} overlaps {describe(previous)}")
        if item.end > self._claimed_end:
            self._claimed_end = item.end
            self._claimed_by = item


def describe(item: Item) -> str:
    """A phrase naming an item and its host range, for error messages."""
    span = f"[{item.host:#x}, {item.end:#x})"
    if isinstance(item, TableRef):
        return f"the L2 table at {span} (L1 entry {item.l1_index})"
    kind = "compressed cluster" if isinstance(item, Packed) else "data cluster"
    return f"the {kind} at {span} (guest offset {item.guest:#x})"
