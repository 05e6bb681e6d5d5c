"""Sizes, rates and durations as people type them (``10G``, ``200MB/s``, ``30m``), for
the CLI and the console alike. Each parser raises ValueError naming what was given."""

from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_RATE_UNITS = {
    "": 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "KI": 1 << 10,
    "MI": 1 << 20,
    "GI": 1 << 30,
}
_SECONDS = {"ms": 0.001, "": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(text: str) -> int:
    """``10G`` -> 10 GiB in bytes (K, M, G, T are powers of 1024; a B or iB suffix is
    allowed)."""
    m = re.fullmatch(r"(\d+)([KMGT]?)(i?B)?", text.strip().upper().replace("IB", "B"))
    if not m:
        raise ValueError(f"not a size: {text[:40]!r} (e.g. 512M, 10G)")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


def parse_rate(text: str) -> int:
    """``200MB/s`` -> bytes per second (K, M, G are powers of 1000; Ki, Mi, Gi of 1024);
    ``0``, ``none`` or ``unlimited`` for no limit."""
    if text.strip().lower() in ("0", "unlimited", "none"):
        return 0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]I?)?B?(/S)?", text.strip().upper())
    if not m:
        raise ValueError(f"not a rate: {text[:40]!r} (e.g. 200MB/s, 1GiB/s, 0)")
    return int(float(m.group(1)) * _RATE_UNITS[m.group(2) or ""])


def parse_seconds(text: str) -> float:
    """``30m`` -> 1800.0 (ms, s, m, h, d; a bare number is seconds)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|[smhd]?)", text.strip())
    if not m:
        raise ValueError(f"not a duration: {text[:40]!r} (e.g. 500ms, 0s, 30m, 1h)")
    return float(m.group(1)) * _SECONDS[m.group(2)]
