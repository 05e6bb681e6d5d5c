"""Unavailability windows: stretches longer than ``window_s`` in which clients had
operations in flight and none of them completed ok.

The busy time (the union of the operations' ``[invoke, complete]`` intervals) is cut at
every ok completion; a piece longer than ``window_s`` is a window. Time with no
operation in flight is idle, not unavailable. A window is not a safety failure: the
verdict is ok when there is none, and a runner decides what its scenario allows.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from fabric.checkers.verdict import Verdict
from fabric.history import Op


def _busy(ops: list[Op]) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    for op in sorted(ops, key=lambda o: o.invoke):
        if spans and op.invoke <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], op.complete))
        else:
            spans.append((op.invoke, op.complete))
    return spans


def check_availability(ops: list[Op], window_s: float = 1.0) -> Verdict:
    oks = sorted(op.complete for op in ops if op.outcome == "ok")
    windows: list[tuple[float, float]] = []
    for start, end in _busy(ops):
        cuts = oks[bisect_right(oks, start) : bisect_right(oks, end)]
        edge = start
        for t in [*cuts, end]:
            if t - edge > window_s:
                windows.append((edge, t))
            edge = t
    total = sum(e - s for s, e in windows)
    stats: dict[str, Any] = {
        "valid": not windows,
        "ops": len(ops),
        "window_s": window_s,
        "windows": [[round(s, 6), round(e, 6)] for s, e in windows],
        "unavailable_s": round(total, 6),
        "longest_s": round(max((e - s for s, e in windows), default=0.0), 6),
    }
    if not windows:
        return Verdict(
            True, "availability", f"no gap over {window_s:g} s without an ok answer", None, stats
        )
    longest = max(windows, key=lambda w: w[1] - w[0])
    detail = (
        f"{len(windows)} windows over {window_s:g} s with no ok answer, {total:.1f} s in all; "
        f"the longest {longest[1] - longest[0]:.1f} s from {longest[0]:.1f} s"
    )
    culprit = next((op for op in ops if op.invoke >= longest[0] and op.outcome != "ok"), None)
    return Verdict(False, "availability", detail, culprit, stats)
