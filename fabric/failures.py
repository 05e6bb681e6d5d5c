"""Failure processes of a scenario (its ``[failures]`` table) and their seeded schedule.

Theory of operation. Every node and every disk lives a sequence of lifetimes drawn from
one distribution (exponential, or Weibull with a shape), scaled so that the chance of a
failure within one year of service is the configured AFR. When a node's lifetime ends
the failure is transient with probability ``transient_fraction`` (the node is back after
``transient_downtime_s``, its data intact) and permanent otherwise (its data is gone and
must be rebuilt elsewhere; the machine is replaced after ``replacement_s``). A disk
failure is always permanent for the data on that disk; the disk is replaced after
``disk_replacement_s``. After each repair or replacement a new lifetime starts (a renewal
process). Correlated events strike a whole rack (power domain) at once, as a Poisson
process per rack: its nodes are down for ``rack_downtime_s`` and each one, independently,
does not come back with probability ``rack_loss_fraction`` (the Copysets paper's "nodes
that fail to reboot after a power outage"). A cluster without racks is one domain.

``failure_schedule`` turns a spec, the nodes and their racks into timed events, a pure
function of the seed; the reliability model (``fabric.reliability``) consumes them, and
``fault_steps`` turns them into fault steps for the full simulator. Repairs are not in
the schedule: how long one takes depends on the data a node holds (``repair_seconds``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fabric.hardware import TableReader

if TYPE_CHECKING:
    from fabric.scenario import FaultStep

YEAR_S = 365.25 * 86400.0
LIFETIMES = ("exponential", "weibull")
MAX_AFR = 0.999
"""An AFR of 1 would mean every machine is dead within the year: no lifetime to draw."""
MAX_EVENTS = 5_000_000
"""A schedule stops here: a limit, not a loop that runs until memory ends."""

EVENT_KINDS = (
    "node-down",  # transient: back with its data at the matching node-up
    "node-up",
    "node-lost",  # permanent: its data must be rebuilt; node-replaced brings an empty one
    "node-replaced",
    "disk-failed",
    "disk-replaced",
    "rack-down",  # correlated: every node of the rack at once, until rack-up
    "rack-up",
)


@dataclass(frozen=True, slots=True)
class FailureSpec:
    """The ``[failures]`` table. The default (every rate 0) schedules nothing."""

    node_afr: float = 0.0
    """Annual failure rate of a node (the chance it fails within a year of service)."""
    disk_afr: float = 0.0
    disks_per_node: int = 1
    lifetime: str = "exponential"
    weibull_shape: float = 1.0
    """Weibull k: < 1 infant mortality, 1 exponential, > 1 wear-out."""
    transient_fraction: float = 0.0
    """Of node failures, the share that come back with their data."""
    transient_downtime_s: float = 600.0
    replacement_s: float = 3 * 86400.0
    """A permanently failed node is replaced (empty) this long after it failed."""
    disk_replacement_s: float = 86400.0
    rack_events_per_year: float = 0.0
    """Correlated events per rack (power domain) and year."""
    rack_downtime_s: float = 3600.0
    rack_loss_fraction: float = 0.0
    """Of the nodes a rack event takes down, the share that never come back."""
    node_bytes: float = 1e12
    """Bytes a node stores (raw, all copies): what a permanent node failure loses."""
    repair_delay_s: float = 600.0
    """From a permanent failure to the start of its rebuild (detection and rebuild delay)."""
    repair_time_s: float = 0.0
    """A fixed rebuild time (0: from the bytes and the rebuild rates below)."""
    rebuild_bytes_per_s: float = 0.0
    """Cluster-wide rebuild rate for one failure's data (the fabric's ``[rebuild]``
    ``bytes_per_s``; 0: no cluster-wide limit)."""
    rebuild_bytes_per_s_per_node: float = 100e6
    """What each node taking part in a rebuild adds (0: no per-node limit)."""

    @property
    def active(self) -> bool:
        return bool(self.node_afr or self.disk_afr or self.rack_events_per_year)


@dataclass(frozen=True, slots=True)
class FailureEvent:
    at_s: float
    kind: str
    node: str = ""
    disk: int = -1
    rack: str = ""


# --- lifetimes and repair times ----------------------------------------------------------------
def lifetime_scale_s(afr: float, spec: FailureSpec) -> float:
    """The distribution's scale (seconds) for which P(lifetime < 1 year) = ``afr``."""
    assert 0 < afr <= MAX_AFR, f"AFR {afr}"
    hazard = -math.log1p(-afr)  # cumulative hazard at one year
    shape = spec.weibull_shape if spec.lifetime == "weibull" else 1.0
    return YEAR_S * math.pow(hazard, -1.0 / shape)


def mean_lifetime_s(afr: float, spec: FailureSpec) -> float:
    shape = spec.weibull_shape if spec.lifetime == "weibull" else 1.0
    return lifetime_scale_s(afr, spec) * math.gamma(1.0 + 1.0 / shape)


def draw_lifetime_s(rng: random.Random, scale_s: float, spec: FailureSpec) -> float:
    if spec.lifetime == "weibull":
        return rng.weibullvariate(scale_s, spec.weibull_shape)
    return rng.expovariate(1.0 / scale_s)


def repair_seconds(spec: FailureSpec, lost_bytes: float, helpers: int) -> float:
    """From a permanent failure to full resiliency again: the delay, then the copy of
    ``lost_bytes`` at the slowest of the cluster-wide rate and ``helpers`` nodes' rates."""
    if spec.repair_time_s > 0:
        return spec.repair_delay_s + spec.repair_time_s
    rates = []
    if spec.rebuild_bytes_per_s > 0:
        rates.append(spec.rebuild_bytes_per_s)
    if spec.rebuild_bytes_per_s_per_node > 0:
        rates.append(spec.rebuild_bytes_per_s_per_node * max(1, helpers))
    copy_s = lost_bytes / min(rates) if rates else 0.0
    return spec.repair_delay_s + copy_s


# --- the schedule --------------------------------------------------------------------------------
def failure_schedule(
    spec: FailureSpec,
    nodes: Sequence[str],
    racks: Mapping[str, str],
    horizon_s: float,
    seed: int,
) -> list[FailureEvent]:
    """Every failure and return in ``[0, horizon_s)``, in time order (ties: node order).

    ``racks``: node -> rack; a node without one is in the cluster-wide domain ``""``.
    """
    rng = random.Random(f"failures:{seed}")
    out: list[FailureEvent] = []
    strikes = _rack_strikes(spec, nodes, racks, horizon_s, rng, out)
    node_scale = lifetime_scale_s(spec.node_afr, spec) if spec.node_afr else 0.0
    for node in nodes:
        _node_life(
            spec, node, node_scale, strikes.get(racks.get(node, ""), []), horizon_s, rng, out
        )
        if len(out) > MAX_EVENTS:
            raise ValueError(f"failure schedule over {MAX_EVENTS} events: shorten the horizon")
    if spec.disk_afr:
        disk_scale = lifetime_scale_s(spec.disk_afr, spec)
        for node in nodes:
            for disk in range(spec.disks_per_node):
                t = 0.0
                while True:
                    t += draw_lifetime_s(rng, disk_scale, spec)
                    if t >= horizon_s:
                        break
                    out.append(FailureEvent(t, "disk-failed", node, disk))
                    t += spec.disk_replacement_s
                    if t < horizon_s:
                        out.append(FailureEvent(t, "disk-replaced", node, disk))
    order = {n: i for i, n in enumerate(nodes)}
    out.sort(key=lambda e: (e.at_s, order.get(e.node, -1), EVENT_KINDS.index(e.kind)))
    return out


def _rack_strikes(
    spec: FailureSpec,
    nodes: Sequence[str],
    racks: Mapping[str, str],
    horizon_s: float,
    rng: random.Random,
    out: list[FailureEvent],
) -> dict[str, list[float]]:
    """rack -> the times it is struck; appends the rack-down / rack-up events."""
    strikes: dict[str, list[float]] = {}
    if not spec.rack_events_per_year:
        return strikes
    mean_gap_s = YEAR_S / spec.rack_events_per_year
    for rack in sorted({racks.get(n, "") for n in nodes}):
        t = rng.expovariate(1.0 / mean_gap_s)
        times = []
        while t < horizon_s:
            times.append(t)
            out.append(FailureEvent(t, "rack-down", rack=rack))
            if t + spec.rack_downtime_s < horizon_s:
                out.append(FailureEvent(t + spec.rack_downtime_s, "rack-up", rack=rack))
            # The next strike comes after this one is over: a domain is struck once at a time.
            t += spec.rack_downtime_s + rng.expovariate(1.0 / mean_gap_s)
        strikes[rack] = times
    return strikes


def _node_life(
    spec: FailureSpec,
    node: str,
    scale_s: float,
    strikes: list[float],
    horizon_s: float,
    rng: random.Random,
    out: list[FailureEvent],
) -> None:
    """One node's failures: its own lifetimes, interrupted by its rack's strikes. A rack
    outage that the node survives does not renew its age (a Weibull lifetime runs on)."""
    i = 0
    t = 0.0
    own = t + draw_lifetime_s(rng, scale_s, spec) if scale_s else math.inf
    while t < horizon_s:
        while i < len(strikes) and strikes[i] < t:
            i += 1  # struck while it was already down: no effect
        struck = strikes[i] if i < len(strikes) else math.inf
        own = max(own, t)  # a lifetime that ran out while the node was down ends at once
        if min(own, struck) >= horizon_s:
            return
        if struck <= own:
            i += 1
            if rng.random() < spec.rack_loss_fraction:
                t = _lost(node, struck, spec, horizon_s, out)
                own = t + draw_lifetime_s(rng, scale_s, spec) if scale_s else math.inf
            else:
                t = struck + spec.rack_downtime_s  # down with its rack, back with it
            continue
        if rng.random() < spec.transient_fraction:
            out.append(FailureEvent(own, "node-down", node))
            t = own + spec.transient_downtime_s
            if t < horizon_s:
                out.append(FailureEvent(t, "node-up", node))
        else:
            t = _lost(node, own, spec, horizon_s, out)
        own = t + draw_lifetime_s(rng, scale_s, spec)


def _lost(
    node: str, at: float, spec: FailureSpec, horizon_s: float, out: list[FailureEvent]
) -> float:
    out.append(FailureEvent(at, "node-lost", node))
    back = at + spec.replacement_s
    if back < horizon_s:
        out.append(FailureEvent(back, "node-replaced", node))
    return back


def fault_steps(
    events: Sequence[FailureEvent],
    racks: Mapping[str, str],
    disk_names: Mapping[str, Sequence[str]] | None = None,
) -> list[FaultStep]:
    """The schedule as the full simulator's fault steps (``fabric.faults`` kinds).

    A transient failure is a node-kill lasting until the node is back (the runner then
    starts it again, as an operator would); a permanent one a node-kill without end, and
    the node stays down for the rest of the run (its replacement, a new empty machine,
    is ``fabric node replace``, not a fault: its later events are dropped); a failed
    disk is a disk-fail on every operation until it is replaced; a rack event is one
    kill of the rack's running nodes, lasting the outage for those not lost in it.
    ``racks``: node -> rack, as given to ``failure_schedule``; ``disk_names``: node -> its
    disks' names as its fault agent knows them, by index (without: a disk failure fails
    every disk of its node).
    """
    from fabric.scenario import FaultStep  # scenario imports this module to parse

    steps: list[FaultStep] = []
    since: dict[str, float] = {}
    """Nodes not running (failed, or taken by their rack) -> since when."""
    outages: dict[tuple[float, float | None], list[str]] = {}
    """(down at, back at or None) -> the nodes down over that span: one kill each."""
    lost: set[str] = set()
    struck: dict[str, list[str]] = {}
    """rack -> the nodes its current outage stopped."""
    failed_disk: dict[tuple[str, int], float] = {}

    def names(node: str) -> Sequence[str]:
        return (disk_names or {}).get(node, ())

    def back(node: str, at: float) -> None:
        start = since.pop(node, None)
        if start is not None:
            outages.setdefault((start, at), []).append(node)

    for e in events:
        if e.node in lost:
            continue  # gone for good: its replacement is not a fault step
        if e.kind in ("node-down", "node-lost"):
            since.setdefault(e.node, e.at_s)
            if e.kind == "node-lost":
                lost.add(e.node)
        elif e.kind == "node-up":
            if racks.get(e.node, "") in struck:
                struck[racks[e.node]].append(e.node)  # its rack is still out: back with it
            else:
                back(e.node, e.at_s)
        elif e.kind == "rack-down":
            members = [n for n, r in racks.items() if r == e.rack and n not in since]
            struck[e.rack] = members
            for n in members:
                since[n] = e.at_s
        elif e.kind == "rack-up":
            for n in struck.pop(e.rack, []):
                if n not in lost:
                    back(n, e.at_s)
        elif e.kind == "disk-failed":
            failed_disk[(e.node, e.disk)] = e.at_s
        elif e.kind == "disk-replaced" and (e.node, e.disk) in failed_disk:
            start = failed_disk.pop((e.node, e.disk))
            steps.append(_disk_step(e.node, e.disk, start, e.at_s - start, names(e.node)))
    for node, start in since.items():
        outages.setdefault((start, None), []).append(node)
    for (start, end), nodes in outages.items():
        lasts = None if end is None else end - start
        steps.append(FaultStep(start, "node-kill", {"nodes": sorted(nodes)}, {}, lasts, "failures"))
    for (node, disk), start in failed_disk.items():
        steps.append(_disk_step(node, disk, start, None, names(node)))
    return sorted(steps, key=lambda s: (s.at_s, s.kind))


def _disk_step(
    node: str, disk: int, at_s: float, lasts_s: float | None, names: Sequence[str]
) -> FaultStep:
    from fabric.scenario import FaultStep

    params: dict[str, Any] = {"ops": ["read", "write", "fsync"]}
    if disk < len(names):
        params["disk"] = names[disk]
    return FaultStep(at_s, "disk-fail", {"nodes": [node]}, params, lasts_s, "failures")


# --- parsing ([failures] of a scenario) --------------------------------------------------------
def parse_failures(r: TableReader) -> FailureSpec:
    """The ``[failures]`` table; errors name the key and its line."""
    d = FailureSpec()
    year = YEAR_S
    spec = FailureSpec(
        node_afr=float(r.number("node_afr", d.node_afr, 0, MAX_AFR)),
        disk_afr=float(r.number("disk_afr", d.disk_afr, 0, MAX_AFR)),
        disks_per_node=r.number("disks_per_node", d.disks_per_node, 1, 64, integer=True),
        lifetime=r.choice("lifetime", LIFETIMES, d.lifetime),
        weibull_shape=float(r.number("weibull_shape", d.weibull_shape, 0.1, 10)),
        transient_fraction=float(r.number("transient_fraction", d.transient_fraction, 0, 1)),
        transient_downtime_s=float(
            r.number("transient_downtime_s", d.transient_downtime_s, 0, year)
        ),
        replacement_s=float(r.number("replacement_s", d.replacement_s, 0, year)),
        disk_replacement_s=float(r.number("disk_replacement_s", d.disk_replacement_s, 0, year)),
        rack_events_per_year=float(
            r.number("rack_events_per_year", d.rack_events_per_year, 0, 1000)
        ),
        rack_downtime_s=float(r.number("rack_downtime_s", d.rack_downtime_s, 0, year)),
        rack_loss_fraction=float(r.number("rack_loss_fraction", d.rack_loss_fraction, 0, 1)),
        node_bytes=float(r.number("node_bytes", d.node_bytes, 1, 1e18)),
        repair_delay_s=float(r.number("repair_delay_s", d.repair_delay_s, 0, year)),
        repair_time_s=float(r.number("repair_time_s", d.repair_time_s, 0, year)),
        rebuild_bytes_per_s=float(r.number("rebuild_bytes_per_s", d.rebuild_bytes_per_s, 0, 1e15)),
        rebuild_bytes_per_s_per_node=float(
            r.number("rebuild_bytes_per_s_per_node", d.rebuild_bytes_per_s_per_node, 0, 1e15)
        ),
    )
    if spec.lifetime != "weibull" and spec.weibull_shape != 1.0:
        raise r.error("weibull_shape", 'only a lifetime = "weibull" has a shape')
    if not spec.repair_time_s and not (
        spec.rebuild_bytes_per_s or spec.rebuild_bytes_per_s_per_node
    ):
        raise r.error("repair_time_s", "give a fixed repair time or a rebuild rate")
    if spec.rack_loss_fraction and not spec.rack_events_per_year:
        raise r.error("rack_loss_fraction", "needs rack_events_per_year > 0")
    r.done()
    return spec
