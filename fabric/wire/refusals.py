"""Counting what peers sent that was refused: a node exports it in /metrics.

A refusal is a peer's bad input (``WireError``): never raised further than the
transport that caught it, but never silent either. The reasons are the codec's closed
list (``REFUSAL_REASONS``), so the metric's label set stays bounded whatever peers send.
"""

from __future__ import annotations

from fabric.wire.codec import REFUSAL_REASONS, WireError


class Refusals:
    def __init__(self) -> None:
        self.by_reason: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)

    def count(self, error: WireError) -> None:
        self.by_reason[error.reason] += 1

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())
