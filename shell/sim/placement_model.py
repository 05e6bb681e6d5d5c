"""The ``placement`` model: a scenario's permanent node kills against the real placement.

Per run (a seed): each container's data is ``GROUPS`` extent groups (RF) or stripes (EC,
members of ``extent_bytes``) placed by ``fabric.placement`` with keys drawn from the
seed, on the scenario's nodes and racks; the scenario's node kills without a
``duration_s`` (those that never come back) are resolved with the seed, as the faults API
resolves targets; ``fabric.placement.survey`` counts what is lost, what is reduced and
what its repair reads. No node processes and no time: it answers "how exposed is this
placement to this failure", in milliseconds per run.
"""

from __future__ import annotations

import math
import random

from fabric.faults import Topology, select
from fabric.placement.survey import Exposure, Layout, Shape, survey
from fabric.scenario import Scenario, schedule

GROUPS = 256
"""Groups (or stripes) per container per run: enough that a lost fraction of 1/256 shows."""


def failed_nodes(scenario: Scenario, seed: int, layout: Layout) -> set[str]:
    """The nodes the scenario kills for good, its targets resolved with the seed."""
    rng = random.Random(f"placement-failure:{seed}")
    # The first voter stands in for the leader, so ``follower`` and ``leader`` name someone.
    leader = layout.nodes[0]
    topo = Topology(layout.nodes, layout.racks, leader)
    followers = Topology(tuple(n for n in layout.nodes if n != leader), layout.racks, leader)
    failed: set[str] = set()
    for step in schedule(scenario, seed):
        if step.kind != "node-kill" or step.duration_s is not None:
            continue
        target = step.target
        if target.get("select") == "follower":
            failed.update(select({"select": "one"}, followers, rng))
        else:
            failed.update(select(target, topo, rng))
    if not failed:
        raise ValueError(
            "the placement model needs a node killed for good: a [[faults.at]] "
            "node-kill without duration_s"
        )
    return failed


def shape_of(rf: int, ec: str, extent_bytes: int) -> Shape:
    if not ec:
        return Shape.replicated(rf, extent_bytes)
    k, m = (int(x) for x in ec.split("+"))
    return Shape.coded(k, m, extent_bytes)


def run(scenario: Scenario, seed: int) -> dict[str, float]:
    spec = scenario.cluster
    layout = Layout.of(spec.nodes, spec.racks)
    failed = failed_nodes(scenario, seed, layout)
    parts: list[Exposure] = []
    for c in scenario.containers:
        keys = [f"eg-{c.name}-{seed}-{i}" for i in range(GROUPS)]
        parts.append(survey(keys, shape_of(c.rf, c.ec, spec.extent_bytes), layout, failed))
    if not parts:
        raise ValueError("the placement model needs at least one [[containers]] table")
    groups = sum(p.groups for p in parts)
    logical = sum(p.logical_bytes for p in parts)
    inside = sum(p.repair_inside_racks_bytes for p in parts)
    across = sum(p.repair_across_racks_bytes for p in parts)
    lost = sum(p.lost for p in parts)
    racked = bool(layout.racks)
    return {
        "data_lost": 1.0 if lost else 0.0,
        "lost_fraction": lost / groups,
        "reduced_fraction": sum(p.reduced for p in parts) / groups,
        "unrepaired_fraction": sum(p.unrepaired for p in parts) / groups,
        "storage_overhead": sum(p.physical_bytes for p in parts) / logical,
        "repair_read_per_byte": (inside + across) / logical,
        "repair_inside_racks_per_byte": inside / logical if racked else math.nan,
        "repair_across_racks_per_byte": across / logical if racked else math.nan,
        "failed_nodes": float(len(failed)),
    }
