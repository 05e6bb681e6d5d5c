"""The closed-form estimate: a binomial per-stripe model, for RF r and EC k+m alike.

A group has ``n`` members (r replicas, or k+m strips) and survives ``t`` lost members
(r-1, or m). Members sit on nodes in distinct fault domains, so with independent
failures each member is, on its own, an alternating process: up, then (after a
permanent failure at rate ``lam``) down for a repair time ``R``. In the long run a
member is down with probability ``p = sum(lam_i * R_i)`` (node and disk failures, each
with its repair), and members are independent. Data is lost when a member fails while
exactly ``t`` of the other ``n - 1`` are down::

    loss rate per group = n * lam * C(n-1, t) * p**t * (1-p)**(n-1-t)

For small ``p`` this is the classic Markov-chain MTTDL of a group with parallel repair,
``MTTDL ~ t! * (n-t-1)! / n! * 1 / (lam * (lam*R)**t)`` (Gibson's RAID model; the
per-stripe binomial form is the one Backblaze publishes for its Vaults). A cluster of
``G`` groups loses ``G`` times as many groups a year, exactly, by linearity of
expectation, whatever the overlap between groups; the chance of *any* loss in a year,
``1 - exp(-G * rate)``, treats groups as independent and so overstates it when one
failure breaks many groups at once (what the Monte Carlo measures).

Correlated events: a rack event takes each member in the struck rack with probability
``q``; with members in distinct racks that is one more independent failure process per
member (rate ``rho * q``). Without racks an event strikes every member at once and the
group is lost when more than ``t`` of its ``n`` fail: ``rho * P(Binomial(n, q) > t)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fabric.failures import (
    YEAR_S,
    FailureSpec,
    mean_lifetime_s,
    repair_seconds,
)
from fabric.reliability.layout import Critical


@dataclass(frozen=True, slots=True)
class ClosedForm:
    member_rate_per_year: float
    """Permanent failures of one member's data (node, disk and rack) per year."""
    member_down_probability: float
    group_loss_rate_per_year: float
    groups_lost_per_year: float
    bytes_lost_per_year: float
    bytes_at_risk: float
    """Expected bytes in groups with no redundancy left (one more failure loses them)."""
    loss_incidents_per_year: float
    """Failures that lose at least one group, a year (see ``closed_form``)."""
    p_loss_per_year: float
    """1 - exp(-incidents a year)."""
    mttdl_years: float
    """1 / incidents a year."""
    node_repair_s: float
    disk_repair_s: float


def binomial(n: int, k: int, p: float) -> float:
    return math.comb(n, k) * p**k * (1 - p) ** (n - k)


def closed_form(
    spec: FailureSpec,
    nodes: int,
    groups: int,
    width: int,
    tolerance: int,
    data_members: int = 1,
    helpers: float = 1.0,
    racks: int = 0,
    critical: tuple[list[Critical], list[list[Critical]]] | None = None,
    copysets: int | None = None,
) -> ClosedForm:
    """The estimate for ``groups`` groups of ``width`` members on ``nodes`` nodes.

    ``helpers``: how many nodes rebuild one node's data together (its scatter width).
    ``critical``: per node and per (node, disk), the distinct sets of ``tolerance``
    co-members (``layout.critical_sets``); ``copysets``: distinct member sets. With
    them, loss *incidents* are counted as a failure that finds any one of its node's
    (disk's) critical sets down, summed over nodes (disks); without them, every lost
    group is taken for an incident of its own.
    """
    n, t = width, tolerance
    node_r = repair_seconds(spec, spec.node_bytes, round(helpers))
    disk_r = repair_seconds(spec, spec.node_bytes / spec.disks_per_node, round(helpers))
    lam_node = 0.0
    if spec.node_afr:
        f = spec.transient_fraction
        cycle = (
            mean_lifetime_s(spec.node_afr, spec)
            + f * spec.transient_downtime_s
            + (1 - f) * spec.replacement_s
        )
        lam_node = (1 - f) / cycle
    rho = spec.rack_events_per_year / YEAR_S
    correlated = racks <= 1
    if not correlated:
        lam_node += rho * spec.rack_loss_fraction
    lam_disk = 0.0
    if spec.disk_afr:
        lam_disk = 1 / (mean_lifetime_s(spec.disk_afr, spec) + spec.disk_replacement_s)
    lam = lam_node + lam_disk
    p = min(1.0, lam_node * node_r + lam_disk * disk_r)
    rate_s = n * lam * binomial(n - 1, t, p)
    if correlated and rho:
        rate_s += rho * sum(binomial(n, j, spec.rack_loss_fraction) for j in range(t + 1, n + 1))
    rate = rate_s * YEAR_S
    member_bytes = spec.node_bytes * nodes / (groups * width)
    logical = member_bytes * data_members
    lost_groups = groups * rate
    incidents = lost_groups
    if critical is not None:
        per_node, per_disk = critical
        pn, pd = lam_node * node_r, lam_disk * disk_r

        def any_down(sets: list[tuple[int, ...]]) -> float:
            # Sets taken as independent of each other: exact for t = 1 (distinct peers),
            # a slight overestimate for larger t (sets that share a peer).
            log_none = 0.0
            for ks in sets:
                down = math.prod(pn + (1 - pn) * -math.expm1(k * math.log1p(-pd)) for k in ks)
                if down >= 1:
                    return 1.0
                log_none += math.log1p(-down)
            return -math.expm1(log_none)

        inc_s = lam_node * sum(any_down(sets) for sets in per_node)
        inc_s += lam_disk * sum(any_down(sets) for ds in per_disk for sets in ds)
        if correlated and rho:
            kill = sum(binomial(n, j, spec.rack_loss_fraction) for j in range(t + 1, n + 1))
            sets = groups if copysets is None else copysets
            inc_s += rho * (-math.expm1(sets * math.log1p(-kill)) if kill < 1 else 1.0)
        incidents = inc_s * YEAR_S
    return ClosedForm(
        member_rate_per_year=lam * YEAR_S,
        member_down_probability=p,
        group_loss_rate_per_year=rate,
        groups_lost_per_year=lost_groups,
        bytes_lost_per_year=lost_groups * logical,
        bytes_at_risk=groups * binomial(n, t, p) * logical,
        loss_incidents_per_year=incidents,
        p_loss_per_year=-math.expm1(-incidents),
        mttdl_years=math.inf if incidents == 0 else 1 / incidents,
        node_repair_s=node_r,
        disk_repair_s=disk_r,
    )
