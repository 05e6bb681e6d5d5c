"""How long each metadata record has gone unchanged, as seen by this node.

The scanner seals extent groups nobody wrote to for a while, and EC converts groups that
stayed cold for ``ec_delay_s``: both ask "how long has this record's version not moved?".
A record's version is the Raft index that last wrote it, so a change is seen as soon as
it is applied; the time it has held is measured on this node's clock from when this node
first saw that version (a new leader starts counting afresh: conservative, never early).
"""

from __future__ import annotations

from collections.abc import Iterable


class QuietClock:
    def __init__(self) -> None:
        self._since: dict[str, tuple[int, float]] = {}

    def quiet_for(self, key: str, version: int, now: float) -> float:
        """Seconds ``key`` has stayed at ``version`` (0 when it just changed)."""
        seen = self._since.get(key)
        if seen is None or seen[0] != version:
            self._since[key] = (version, now)
            return 0.0
        return now - seen[1]

    def keep_only(self, keys: Iterable[str]) -> None:
        """Forget records that are gone, so the clock never outgrows the metadata."""
        live = set(keys)
        for key in [k for k in self._since if k not in live]:
            del self._since[key]

    def clear(self) -> None:
        self._since.clear()
