"""Template filters: numbers and states as an operator reads them."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

_BADGES = {
    "UP": "ok",
    "ACTIVE": "ok",
    "SUCCEEDED": "ok",
    "DEGRADED": "warn",
    "PENDING": "warn",
    "RUNNING": "warn",
    "DRAINING": "warn",
    "DOWN": "bad",
    "FAILED": "bad",
    "FULL": "bad",
    "ERROR": "bad",
}
"""The colour class of a state; any other state gets the neutral badge."""
NONE = "\N{EN DASH}"
"""What a value that is not there reads as."""


def size(n: Any) -> str:
    """Bytes in binary units, as ``fabric status`` prints them (``1.5 GiB``)."""
    if not isinstance(n, int | float):
        return NONE
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def iso(wall: Any) -> str:
    """A wall-clock time (seconds since the epoch) in ISO 8601, UTC, to the second."""
    if not isinstance(wall, int | float) or wall <= 0:
        return NONE
    moment = datetime.datetime.fromtimestamp(wall, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def percent(fraction: Any) -> str:
    return f"{100 * fraction:.0f} %" if isinstance(fraction, int | float) else NONE


def badge(state: Any) -> str:
    return _BADGES.get(str(state).upper(), "neutral")


FILTERS: dict[str, Callable[..., Any]] = {
    "size": size,
    "iso": iso,
    "percent": percent,
    "badge": badge,
}
