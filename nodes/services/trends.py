"""The cluster's recent past, for the console's charts: capacity and disk throughput.

The leader samples them from what it already holds (the usage of its cluster view and
the byte counters in every node's health report), so a sample costs no message. A node
that stops leading drops its samples: the next leader's would not join them (different
reports, a gap), and a chart with a hole is better told by starting again.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Sample:
    wall: float
    """Seconds since the epoch, for the chart's time axis."""
    disk_used_bytes: int
    disk_capacity_bytes: int
    logical_bytes: int
    physical_bytes: int
    written_bytes_per_s: float | None
    """Bytes appended to every disk of the cluster (each copy, rebuilds included), per
    second since the previous sample; None for the first sample of a leader."""
    read_bytes_per_s: float | None
    """Bytes read from every disk (client reads, rebuilds, scrubs), the same way."""


Counters = dict[str, tuple[int, int]]
"""node -> (bytes written, bytes read) since that node process started."""


class Trends:
    def __init__(self, kept: int) -> None:
        self.samples: deque[Sample] = deque(maxlen=kept)
        self.taken = 0
        """Samples taken since the node started: a chart's version (its cache key)."""
        self._last: Counters = {}
        self._last_at: float | None = None

    def add(self, now: float, wall: float, usage: dict[str, Any], counters: Counters) -> None:
        """One sample: ``usage`` as the cluster view gives it, ``counters`` from the
        reports; ``now`` on the monotonic clock that times the rates."""
        written = read = None
        if self._last_at is not None and now > self._last_at:
            elapsed = now - self._last_at
            written = sum(_delta(counters, self._last, n, 0) for n in counters) / elapsed
            read = sum(_delta(counters, self._last, n, 1) for n in counters) / elapsed
        self._last, self._last_at = counters, now
        self.taken += 1
        self.samples.append(
            Sample(
                wall=wall,
                disk_used_bytes=int(usage.get("disk_used_bytes", 0)),
                disk_capacity_bytes=int(usage.get("disk_capacity_bytes", 0)),
                logical_bytes=int(usage.get("logical_bytes", 0)),
                physical_bytes=int(usage.get("physical_bytes", 0)),
                written_bytes_per_s=written,
                read_bytes_per_s=read,
            )
        )

    def clear(self) -> None:
        self.samples.clear()
        self._last, self._last_at = {}, None

    def to_json(self, newest: int) -> dict[str, Any]:
        """The ``newest`` samples, oldest first."""
        kept = list(self.samples)[-newest:] if newest > 0 else []
        return {"taken": self.taken, "samples": [dataclasses.asdict(s) for s in kept]}


def _delta(now: Counters, before: Counters, node: str, i: int) -> int:
    """What ``node`` moved since the last sample. A node seen for the first time counts
    nothing yet (its total holds bytes from before the window); a total that went down
    is a restarted process, whose whole new total is new."""
    if node not in before:
        return 0
    current, previous = now[node][i], before[node][i]
    return current - previous if current >= previous else current
