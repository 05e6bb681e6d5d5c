"""The trace hash of a simulated run: one xxh3-128 over everything that happened.

Every message the simulated network carries goes in as it is handed over (virtual send
time, sender, receiver, the encoded bytes the codec produced once for delivery), then
the experiment's history, line by line. Two runs with the same seed and the same code
give the same hash; any difference in what any node said, or when, changes it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import xxhash

_HEAD = struct.Struct("<dI")


class TraceHash:
    def __init__(self) -> None:
        self._hash = xxhash.xxh3_128()
        self.messages = 0

    def message(self, at: float, frm: str, to: str, payload: bytes) -> None:
        """A ``SimNetwork`` tap."""
        self.messages += 1
        self._hash.update(_HEAD.pack(at, len(payload)))
        self._hash.update(f"{frm}>{to}\0".encode())
        self._hash.update(payload)

    def lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self._hash.update(line.encode() + b"\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
