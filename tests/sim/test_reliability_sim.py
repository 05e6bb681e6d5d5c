"""The reliability model's repair against the real rebuild on a simulated cluster.

One of five RF2 nodes is lost for good; the model says its rebuild copies the bytes the
node held, starting after detection and the rebuild delay, at the cluster-wide rebuild
rate (``failures.repair_seconds``). The real nodes, on virtual time, must agree: repair
bytes within ``BYTES_TOLERANCE``, time to full resiliency within ``TIME_TOLERANCE``
(docs/RELIABILITY.md, "Against the full simulation").
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from fabric import limits
from fabric.failures import FailureSpec, repair_seconds
from fabric.metadata.records import RebuildSettings
from nodes.simcluster import SimCluster
from tests.sim.conftest import config
from tests.sim.test_rebuild_sim import leader_state, under_replicated, write

MiB = 1 << 20
RATE = 2 * MiB
"""Cluster-wide rebuild bytes a second: slow enough that copying dominates the time."""
DELAY_S = 1.0
DOWN_AFTER_MS = 2000
BYTES_TOLERANCE = 0.02
"""Repair bytes: the model copies the node's group bytes; the fabric copies the same
groups (its dead bytes too) — equal but for groups sealed after the count."""
FRONT_BYTES = max(RATE, limits.EGROUP_MAX_BYTES) + limits.EGROUP_MAX_BYTES
"""What the fabric copies at once where the model spreads it at the rate: its rebuild
token bucket starts full (``max(rate, one group)``) and charges a copy when it starts,
so one more group goes while the balance is still positive. On a node holding
terabytes this is nothing; on a cluster holding megabytes it is most of the time."""
TIME_TOLERANCE_S = 1.5
"""Beyond that offset: the model has no planner period (0.5 s), heartbeat phase or
per-copy round trips."""


@pytest.mark.parametrize("seed", [1, 2])
def test_one_lost_node_is_rebuilt_in_the_bytes_and_time_the_model_predicts(seed: int) -> None:
    base = config(5)
    cfg = replace(
        base,
        rebuild=RebuildSettings(delay_s=DELAY_S, bytes_per_s=RATE, per_node=8),
        timeouts=replace(base.timeouts, down_after_ms=DOWN_AFTER_MS),
    )
    sim = SimCluster(cfg, seed)
    try:
        sim.run(sim.start_all())
        sim.run(
            sim.wait_for(
                lambda: sim.leader() is not None and all(n.registered for n in sim.nodes.values()),
                20,
                "a leader and every node registered",
            )
        )
        sim.run(write(sim, "a", random.Random(seed).randbytes(64 * MiB)))
        state = leader_state(sim)
        voters = set(cfg.voters)
        holders = sorted(n for n in state.idx.egroups_on if n not in voters)
        victim = random.Random(seed).choice(holders)
        held = sum(
            eg.size
            for _, item in state.scan("egroup/")
            if victim in (eg := item.value).replicas and eg.extents
        )
        start = sim.loop.time()
        sim.crash(victim)
        sim.run(sim.wait_for(lambda: not under_replicated(sim, 2), 300, "full resiliency"))
        took = sim.loop.time() - start
        rebuilt = leader_state(sim).container("c").stats.rebuilt_bytes  # type: ignore[union-attr]

        spec = FailureSpec(
            repair_delay_s=DOWN_AFTER_MS / 1000 + DELAY_S,
            rebuild_bytes_per_s=RATE,
            rebuild_bytes_per_s_per_node=0,
        )
        predicted = repair_seconds(spec, held, helpers=4)
        assert abs(rebuilt - held) <= BYTES_TOLERANCE * held, (
            f"seed {seed}: rebuilt {rebuilt} bytes, the node held {held}"
        )
        front_s = min(held, FRONT_BYTES) / RATE
        assert abs(took - (predicted - front_s)) <= TIME_TOLERANCE_S, (
            f"seed {seed}: full resiliency after {took:.2f} s, the model says {predicted:.2f} s"
            f" less {front_s:.2f} s of the fabric's initial burst"
        )
    finally:
        sim.close()
