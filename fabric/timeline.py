"""What an experiment's history and samples add up to: a row per second, windows in
which a workload got nothing done, time at reduced resiliency, rebuild time and traffic.

Pure: operations (``fabric.history.Op``), samples of the cluster and the faults the
runner applied go in; rows and numbers come out. Times are seconds since the run
started, as in the history.

* An operation counts in the second it completed; its latency is ``complete - invoke``.
* An unavailability window is a stretch longer than ``gap_s`` (1 s) in which a workload
  completed no operation successfully, between its first invocation and the end of the
  run (or its last invocation, when it stopped early). Workloads are judged apart: a kv
  client that keeps working does not hide a vdisk writer that is stuck.
* A sample is *reduced* when some container has bytes at reduced resiliency or lost
  resiliency; the time at reduced resiliency is the sum of the sample intervals that
  start reduced.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fabric.history import Op

GAP_S = 1.0


@dataclass(frozen=True, slots=True)
class Sample:
    """The cluster at one moment, as the runner's sampler saw it (once a second)."""

    t: float
    leader: str | None = None
    nodes_up: int = 0
    nodes_total: int = 0
    resiliency: int | None = None
    """The weakest container's resiliency (None: no answer or no container)."""
    reduced: bool = False
    reduced_resiliency_bytes: int = 0
    rebuilt_bytes: int = 0
    """Cumulative, over every container (the cluster's own count)."""
    copied_by_node: dict[str, int] = field(default_factory=dict)
    """Cumulative rebuild bytes each node received as a copy target (its /metrics)."""
    pulled_by_link: dict[str, int] = field(default_factory=dict)
    """Cumulative rebuild bytes read over each ``"source>target"`` link (the targets'
    ``fabric_rebuild_pulled_bytes``): where repair traffic went."""
    degraded_reads: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    ok: bool = True
    """False: no node answered this sample (the other fields are defaults)."""


@dataclass(frozen=True, slots=True)
class FaultBand:
    """A fault as the runner applied it, for the report and the plots' shading."""

    start: float
    end: float | None
    kind: str
    nodes: tuple[str, ...] = ()
    via: str = "api"
    """``api`` (``/api/v1/faults``), ``process`` (the runner's own signals, the fallback
    while the API is missing) or ``skipped`` (neither could apply it)."""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Row:
    t: int
    ops: int
    ok: int
    errors: int
    mb_s: float
    lat_p50_ms: float | None
    lat_p99_ms: float | None
    resiliency: int | None
    reduced_resiliency_bytes: int
    rebuild_bytes: int
    nodes_up: int | None
    faults_active: int


COLUMNS = (
    "t",
    "ops",
    "ok",
    "errors",
    "mb_s",
    "lat_p50_ms",
    "lat_p99_ms",
    "resiliency",
    "reduced_resiliency_bytes",
    "rebuild_bytes",
    "nodes_up",
    "faults_active",
)
"""``timeline.csv``'s header, in order (``ops`` per second: the rows are one second)."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_ms(op: Op) -> float:
    return (op.complete - op.invoke) * 1000.0


def rows(
    ops: Sequence[Op], samples: Sequence[Sample], faults: Sequence[FaultBand], duration_s: float
) -> list[Row]:
    """One row per second of the run, ``0 .. ceil(duration_s) - 1`` (later ops in the last)."""
    seconds = max(1, math.ceil(duration_s))
    done: list[list[Op]] = [[] for _ in range(seconds)]
    for op in ops:
        done[min(seconds - 1, max(0, int(op.complete)))].append(op)
    by_second: dict[int, Sample] = {}
    for s in samples:
        if s.ok:
            by_second.setdefault(min(seconds - 1, int(s.t)), s)
    out = []
    last: Sample | None = None
    for t in range(seconds):
        bucket = done[t]
        ok = [op for op in bucket if op.outcome == "ok"]
        lat = [latency_ms(op) for op in ok]
        moved = sum(int(op.extra.get("bytes", 0)) for op in ok)
        sample = by_second.get(t)
        rebuilt = 0
        if sample is not None:
            rebuilt = max(0, sample.rebuilt_bytes - last.rebuilt_bytes) if last else 0
            last = sample
        out.append(
            Row(
                t=t,
                ops=len(bucket),
                ok=len(ok),
                errors=len(bucket) - len(ok),
                mb_s=round(moved / 1e6, 3),
                lat_p50_ms=_round(percentile(lat, 50)),
                lat_p99_ms=_round(percentile(lat, 99)),
                resiliency=sample.resiliency if sample else None,
                reduced_resiliency_bytes=sample.reduced_resiliency_bytes if sample else 0,
                rebuild_bytes=rebuilt,
                nodes_up=sample.nodes_up if sample else None,
                faults_active=sum(1 for f in faults if _active(f, t + 0.5, duration_s)),
            )
        )
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _active(f: FaultBand, t: float, duration_s: float) -> bool:
    end = duration_s if f.end is None else f.end
    return f.via != "skipped" and f.start <= t < end


def unavailability(
    ops: Sequence[Op], duration_s: float, gap_s: float = GAP_S
) -> dict[str, list[tuple[float, float]]]:
    """Per workload (``extra["workload"]``, else the kind): windows with no ``ok``
    completion for longer than ``gap_s``."""
    by_workload: dict[str, list[Op]] = {}
    for op in ops:
        by_workload.setdefault(str(op.extra.get("workload", op.kind)), []).append(op)
    out = {}
    for name, mine in sorted(by_workload.items()):
        start = min(op.invoke for op in mine)
        stop = max(op.invoke for op in mine)
        end = max(stop, min(duration_s, max(op.complete for op in mine)))
        marks = [start, *sorted(op.complete for op in mine if op.outcome == "ok"), end]
        out[name] = [
            (round(a, 3), round(b, 3)) for a, b in itertools.pairwise(marks) if b - a > gap_s
        ]
    return out


def reduced_seconds(samples: Sequence[Sample], duration_s: float) -> float:
    good = [s for s in samples if s.ok]
    total = 0.0
    for s, nxt in zip(good, [*good[1:], None], strict=True):
        end = duration_s if nxt is None else nxt.t
        if s.reduced:
            total += max(0.0, min(end, duration_s) - s.t)
    return round(total, 2)


def rebuild_window(samples: Sequence[Sample]) -> tuple[float, float | None] | None:
    """(when bytes first were at reduced resiliency, when none were again: None if never
    within the run); None if no byte ever was."""
    good = [s for s in samples if s.ok]
    start = next((s.t for s in good if s.reduced_resiliency_bytes > 0), None)
    if start is None:
        return None
    end = next((s.t for s in good if s.t > start and s.reduced_resiliency_bytes == 0), None)
    return (start, end)


def repair_traffic(samples: Sequence[Sample], racks: dict[str, str]) -> dict[str, Any]:
    """Bytes rebuilt over the run: the cluster's count, what each node and rack received
    as a copy target, and the bytes read over each source>target link, split into those
    that stayed inside a rack and those that crossed one (None without racks). Counts
    re-replication copies; an EC member rebuilt from its strip is not in them."""
    good = [s for s in samples if s.ok]
    if not good:
        return {"rebuilt_bytes": None, "by_node": {}, "by_rack": {}}
    first, last = good[0], good[-1]
    by_node = {
        n: max(0, v - first.copied_by_node.get(n, 0))
        for n, v in sorted(_latest_counters(good).items())
    }
    by_rack: dict[str, int] = {}
    for n, v in by_node.items():
        if n in racks:
            by_rack[racks[n]] = by_rack.get(racks[n], 0) + v
    links = {
        link: max(0, v - first.pulled_by_link.get(link, 0))
        for link, v in sorted(_latest_links(good).items())
    }
    inside = across = 0
    for link, v in links.items():
        source, _, target = link.partition(">")
        if racks.get(source) is not None and racks.get(source) == racks.get(target):
            inside += v
        else:
            across += v
    return {
        "rebuilt_bytes": max(0, last.rebuilt_bytes - first.rebuilt_bytes),
        "received_bytes": sum(by_node.values()),
        "by_node": by_node,
        "by_rack": by_rack,
        "by_link": links,
        "inside_racks_bytes": inside if racks else None,
        "across_racks_bytes": across if racks else None,
    }


def _latest_links(samples: Iterable[Sample]) -> dict[str, int]:
    latest: dict[str, int] = {}
    for s in samples:
        latest.update(s.pulled_by_link)
    return latest


def _latest_counters(samples: Iterable[Sample]) -> dict[str, int]:
    """Each node's last reading (a node that went down keeps its last one)."""
    latest: dict[str, int] = {}
    for s in samples:
        latest.update(s.copied_by_node)
    return latest


def degraded_latency(
    ops: Sequence[Op], samples: Sequence[Sample], faults: Sequence[FaultBand], duration_s: float
) -> dict[str, Any]:
    """Read latency while the cluster was degraded (a fault active, or a node not UP in
    the last sample before the read completed) against the rest: the reads a degraded
    cluster serves, as the clients saw them."""
    answered = sorted((s for s in samples if s.ok), key=lambda s: s.t)
    times = [s.t for s in answered]

    def degraded(t: float) -> bool:
        i = bisect.bisect_right(times, t) - 1
        down = i >= 0 and answered[i].nodes_up < answered[i].nodes_total
        return down or any(_active(f, t, duration_s) for f in faults)

    reads = [op for op in ops if op.kind == "read" and op.outcome == "ok"]
    bad = [latency_ms(op) for op in reads if degraded(op.complete)]
    good = [latency_ms(op) for op in reads if not degraded(op.complete)]
    return {
        "degraded_reads": len(bad),
        "degraded_p50_ms": _round(percentile(bad, 50)),
        "degraded_p99_ms": _round(percentile(bad, 99)),
        "healthy_reads": len(good),
        "healthy_p50_ms": _round(percentile(good, 50)),
        "healthy_p99_ms": _round(percentile(good, 99)),
    }


def op_counts(ops: Sequence[Op]) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = {}
    for op in ops:
        k = by_kind.setdefault(op.kind, {"ok": 0, "fail": 0, "unknown": 0})
        k[op.outcome] += 1
    totals = {o: sum(k[o] for k in by_kind.values()) for o in ("ok", "fail", "unknown")}
    lat = [latency_ms(op) for op in ops if op.outcome == "ok"]
    return {
        "total": len(ops),
        **totals,
        "by_kind": by_kind,
        "latency_p50_ms": _round(percentile(lat, 50)),
        "latency_p99_ms": _round(percentile(lat, 99)),
        "bytes": sum(int(op.extra.get("bytes", 0)) for op in ops if op.outcome == "ok"),
    }
