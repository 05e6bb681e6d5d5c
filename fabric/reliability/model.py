"""The reliability model: an event-driven Monte Carlo of failures and repairs.

Theory of operation. A trial takes one seeded failure schedule (``fabric.failures``)
over the horizon and walks it in time order together with the repairs it starts. The
state is a count per group of its members whose data is gone: a member is gone while
its node is lost and not yet rebuilt, or its disk is. A permanent node failure makes
every member on the node gone and starts one rebuild of the node's bytes, at the rate
its scatter width allows (``failures.repair_seconds``); a disk failure does the same for
the members on that disk. When a rebuild ends its members are whole again (the copies
were made on other nodes; which ones does not change a group's risk at this scale).
A group whose count passes its tolerance has lost data: that counts once per crossing,
and a failure event that makes at least one group cross is one *loss incident*.
Transient failures and rack outages that nodes come back from cost availability, never
data, and leave the counts alone.

Only failures and repairs are events, never chunks or bytes: a 10,000-node, 10-year
trial is a few thousand events, each touching the groups of one node or disk.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from fabric.failures import YEAR_S, FailureSpec, failure_schedule, repair_seconds
from fabric.reliability.closed import ClosedForm, closed_form
from fabric.reliability.layout import Layout, critical_sets, disk_of
from fabric.reliability.stats import (
    CONFIDENCE,
    Estimate,
    inverse,
    mean_ci,
    poisson_rate_ci,
    proportion_ci,
)


@dataclass
class TrialResult:
    groups_lost: int = 0
    bytes_lost: float = 0.0
    incidents: list[float] = field(default_factory=list)
    """When each loss incident happened (seconds into the trial)."""
    risk_byte_s: float = 0.0
    """Integral over time of the bytes in groups with no redundancy left."""
    repairs: int = 0
    repair_bytes: float = 0.0
    events: int = 0


class _Trial:
    """One trial's state: the walk of ``run_trial`` (below) over its events."""

    def __init__(self, layout: Layout, spec: FailureSpec, repairs: bool) -> None:
        self.layout = layout
        self.spec = spec
        self.repairs = repairs
        n = len(layout.nodes)
        self.tol = layout.tolerance
        member_bytes = spec.node_bytes * n / (len(layout.members) * layout.width)
        self.logical = member_bytes * layout.data_members
        self.lost = [0] * len(layout.members)
        self.node_gone = [False] * n
        self.node_gen = [0] * n
        d = spec.disks_per_node
        self.disk_gone = [[False] * d for _ in range(n)]
        self.disk_gen = [[0] * d for _ in range(n)]
        self.disk_groups: list[list[list[int]]] = [[[] for _ in range(d)] for _ in range(n)]
        for node, groups in enumerate(layout.node_groups):
            for g in groups:
                self.disk_groups[node][disk_of(g, node, d)].append(g)
        scatter = layout.scatter()
        self.node_repair_s = [repair_seconds(spec, spec.node_bytes, s) for s in scatter]
        self.disk_repair_s = [repair_seconds(spec, spec.node_bytes / d, s) for s in scatter]
        self.risk_bytes = 0.0
        self.result = TrialResult()
        self.pending: list[tuple[float, int, str, int, int, int]] = []
        """Repairs in flight: (ends at, seq, "node"|"disk", node, disk, generation)."""
        self._seq = 0
        self.crossed = False
        """Set when the event being applied made a group lose data (one incident)."""

    # --- member bookkeeping --------------------------------------------------------------------
    def _down(self, g: int) -> None:
        self.lost[g] += 1
        c = self.lost[g]
        if c == self.tol:
            self.risk_bytes += self.logical
        elif c == self.tol + 1:
            self.risk_bytes -= self.logical
            self.result.groups_lost += 1
            self.result.bytes_lost += self.logical
            self.crossed = True

    def _up(self, g: int) -> None:
        c = self.lost[g]
        assert c > 0, f"group {g} repaired beyond whole"
        self.lost[g] = c - 1
        if c == self.tol:
            self.risk_bytes -= self.logical
        elif c == self.tol + 1:
            self.risk_bytes += self.logical

    def _schedule(self, at: float, what: str, node: int, disk: int, gen: int) -> None:
        if self.repairs:
            self._seq += 1
            heapq.heappush(self.pending, (at, self._seq, what, node, disk, gen))

    # --- events ----------------------------------------------------------------------------------
    def node_lost(self, node: int, at: float) -> None:
        if not self.node_gone[node]:
            self.node_gone[node] = True
            for g in self.layout.node_groups[node]:
                if not self.disk_gone[node][disk_of(g, node, self.spec.disks_per_node)]:
                    self._down(g)
        # Lost again while its last rebuild ran: the rebuild starts over.
        self.node_gen[node] += 1
        self._schedule(at + self.node_repair_s[node], "node", node, -1, self.node_gen[node])

    def disk_failed(self, node: int, disk: int, at: float) -> None:
        if self.node_gone[node] or self.disk_gone[node][disk]:
            return  # its data is already gone and being rebuilt
        self.disk_gone[node][disk] = True
        for g in self.disk_groups[node][disk]:
            self._down(g)
        self.disk_gen[node][disk] += 1
        self._schedule(at + self.disk_repair_s[node], "disk", node, disk, self.disk_gen[node][disk])

    def repaired(self, what: str, node: int, disk: int, gen: int) -> None:
        spec = self.spec
        if what == "node":
            if gen != self.node_gen[node]:
                return
            self.node_gone[node] = False
            for g in self.layout.node_groups[node]:
                if not self.disk_gone[node][disk_of(g, node, spec.disks_per_node)]:
                    self._up(g)
            moved = spec.node_bytes
        else:
            if gen != self.disk_gen[node][disk]:
                return
            self.disk_gone[node][disk] = False
            if not self.node_gone[node]:
                for g in self.disk_groups[node][disk]:
                    self._up(g)
            moved = spec.node_bytes / spec.disks_per_node
        self.result.repairs += 1
        self.result.repair_bytes += moved


def run_trial(
    layout: Layout, spec: FailureSpec, years: float, seed: int, repairs: bool = True
) -> TrialResult:
    """One trial of ``years``, its failures drawn from ``seed``; ``repairs=False``: no
    rebuild ever ends (what the checker tests use to break the model)."""
    horizon = years * YEAR_S
    index = {n: i for i, n in enumerate(layout.nodes)}
    events = failure_schedule(spec, layout.nodes, layout.racks, horizon, seed)
    trial = _Trial(layout, spec, repairs)
    out = trial.result
    out.events = len(events)
    last = 0.0

    def advance(to: float) -> None:
        nonlocal last
        out.risk_byte_s += trial.risk_bytes * (to - last)
        last = to

    for e in events:
        while trial.pending and trial.pending[0][0] <= e.at_s:
            at, _, what, node, disk, gen = heapq.heappop(trial.pending)
            advance(at)
            trial.repaired(what, node, disk, gen)
        advance(e.at_s)
        trial.crossed = False
        if e.kind == "node-lost":
            trial.node_lost(index[e.node], e.at_s)
        elif e.kind == "disk-failed":
            trial.disk_failed(index[e.node], e.disk, e.at_s)
        if trial.crossed:
            out.incidents.append(e.at_s)
    while trial.pending and trial.pending[0][0] < horizon:
        at, _, what, node, disk, gen = heapq.heappop(trial.pending)
        advance(at)
        trial.repaired(what, node, disk, gen)
    advance(horizon)
    return out


@dataclass(frozen=True)
class Summary:
    trials: int
    years: float
    nodes: int
    groups: int
    width: int
    tolerance: int
    p_loss_per_year: Estimate
    """Share of trial-years with at least one loss incident."""
    loss_incidents_per_year: Estimate
    mttdl_years: Estimate
    """Mean time to a loss incident."""
    groups_lost_per_year: Estimate
    bytes_lost_per_year: Estimate
    bytes_at_risk: Estimate
    """Time-averaged bytes in groups with no redundancy left."""
    repair_bytes_per_year: float
    events_per_trial: float
    closed: ClosedForm

    def as_dict(self) -> dict[str, object]:
        c = self.closed
        return {
            "trials": self.trials,
            "years": self.years,
            "nodes": self.nodes,
            "groups": self.groups,
            "width": self.width,
            "tolerance": self.tolerance,
            "p_loss_per_year": self.p_loss_per_year.as_dict(),
            "loss_incidents_per_year": self.loss_incidents_per_year.as_dict(),
            "mttdl_years": self.mttdl_years.as_dict(),
            "groups_lost_per_year": self.groups_lost_per_year.as_dict(),
            "bytes_lost_per_year": self.bytes_lost_per_year.as_dict(),
            "bytes_at_risk": self.bytes_at_risk.as_dict(),
            "repair_bytes_per_year": self.repair_bytes_per_year,
            "events_per_trial": self.events_per_trial,
            "closed_form": {
                "loss_incidents_per_year": c.loss_incidents_per_year,
                "p_loss_per_year": c.p_loss_per_year,
                "mttdl_years": c.mttdl_years,
                "groups_lost_per_year": c.groups_lost_per_year,
                "bytes_lost_per_year": c.bytes_lost_per_year,
                "bytes_at_risk": c.bytes_at_risk,
                "member_down_probability": c.member_down_probability,
                "node_repair_s": c.node_repair_s,
                "disk_repair_s": c.disk_repair_s,
            },
        }


def simulate(
    layout: Layout,
    spec: FailureSpec,
    years: float,
    trials: int,
    seed: int,
    repairs: bool = True,
    progress: Callable[[int], None] | None = None,
    confidence: float = CONFIDENCE,
) -> Summary:
    """``trials`` independent trials (seeds derived from ``seed``) and the closed form."""
    assert trials >= 1 and years > 0
    results = []
    for i in range(trials):
        results.append(run_trial(layout, spec, years, seed * 1_000_003 + i, repairs))
        if progress is not None:
            progress(i + 1)
    whole_years = max(1, math.floor(years))
    hit_years = sum(
        len({min(whole_years - 1, int(t // YEAR_S)) for t in r.incidents}) for r in results
    )
    exposure = trials * years
    incidents = sum(len(r.incidents) for r in results)
    incident_rate = poisson_rate_ci(incidents, exposure, confidence)
    scatter = layout.scatter()
    helpers = sum(scatter) / len(scatter)
    closed = closed_form(
        spec,
        len(layout.nodes),
        len(layout.members),
        layout.width,
        layout.tolerance,
        layout.data_members,
        helpers,
        len({r for r in layout.racks.values() if r}),
        critical_sets(layout, spec.disks_per_node),
        len({tuple(sorted(m)) for m in layout.members}),
    )
    return Summary(
        trials=trials,
        years=years,
        nodes=len(layout.nodes),
        groups=len(layout.members),
        width=layout.width,
        tolerance=layout.tolerance,
        p_loss_per_year=proportion_ci(hit_years, trials * whole_years, confidence),
        loss_incidents_per_year=incident_rate,
        mttdl_years=inverse(incident_rate),
        groups_lost_per_year=mean_ci([r.groups_lost / years for r in results], confidence),
        bytes_lost_per_year=mean_ci([r.bytes_lost / years for r in results], confidence),
        bytes_at_risk=mean_ci([r.risk_byte_s / (years * YEAR_S) for r in results], confidence),
        repair_bytes_per_year=sum(r.repair_bytes for r in results) / exposure,
        events_per_trial=sum(r.events for r in results) / trials,
        closed=closed,
    )
