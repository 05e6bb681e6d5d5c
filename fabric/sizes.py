"""Sizes as people type them (``10G``, ``512M``), for the CLI and the console alike."""

from __future__ import annotations

import re

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``10G`` -> 10 GiB in bytes (K, M, G, T are powers of 1024; a B or iB suffix is
    allowed). ValueError names what was given."""
    m = re.fullmatch(r"(\d+)([KMGT]?)(i?B)?", text.strip().upper().replace("IB", "B"))
    if not m:
        raise ValueError(f"not a size: {text[:40]!r} (e.g. 512M, 10G)")
    return int(m.group(1)) * _UNITS[m.group(2)]
