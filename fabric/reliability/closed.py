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
    p_loss_per_year: float
    """1 - exp(-groups lost a year): independent groups (an upper estimate)."""
    mttdl_years: float
    """1 / groups lost a year."""
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
) -> ClosedForm:
    """The estimate for ``groups`` groups of ``width`` members on ``nodes`` nodes.

    ``helpers``: how many nodes rebuild one node's data together (its scatter width).
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
    return ClosedForm(
        member_rate_per_year=lam * YEAR_S,
        member_down_probability=p,
        group_loss_rate_per_year=rate,
        groups_lost_per_year=lost_groups,
        bytes_lost_per_year=lost_groups * logical,
        bytes_at_risk=groups * binomial(n, t, p) * logical,
        p_loss_per_year=-math.expm1(-lost_groups),
        mttdl_years=math.inf if lost_groups == 0 else 1 / lost_groups,
        node_repair_s=node_r,
        disk_repair_s=disk_r,
    )
