"""Re-replication on simulated clusters: a lost node's copies are made again elsewhere."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from fabric.extents.policy import ContainerPolicy
from fabric.metadata import healing
from fabric.metadata.state import MetadataState
from nodes.simcluster import SimCluster
from tests.sim.conftest import chunks, started

MiB = 1 << 20
SEEDS = (
    [int(os.environ["REBUILD_SEED"])]
    if "REBUILD_SEED" in os.environ
    else list(range(int(os.environ.get("REBUILD_SEEDS", "6"))))
)


def leader_state(sim: SimCluster) -> MetadataState:
    leader = sim.leader()
    assert leader is not None, f"seed {sim.seed}: no leader"
    return sim.nodes[leader].metadata.state


async def write(sim: SimCluster, name: str, data: bytes, rf: int = 2) -> None:
    g = sim.nodes[sorted(sim.nodes)[0]]
    if g.metadata.state.container("c") is None:
        await g.catalog.create_container("c", ContainerPolicy(rf=rf))
    await g.catalog.create_vdisk(name, "c", len(data))
    await g.writer.write(name, 0, len(data), chunks(data))


async def read_all(sim: SimCluster, via: str, name: str) -> bytes:
    _, _, stream = await sim.nodes[via].reader.read(name, 0, None)
    return b"".join([c async for c in stream])


def under_replicated(sim: SimCluster, rf: int) -> list[str]:
    """Groups holding data with fewer than ``rf`` copies on running, UP nodes."""
    if sim.leader() is None:
        return ["(no leader yet)"]
    state = leader_state(sim)
    up = state.up_nodes() & set(sim.nodes)
    out = []
    for key, item in state.scan("egroup/"):
        eg = item.value
        if eg.extents and not eg.strip and sum(n in up for n in eg.replicas) < rf:
            out.append(key)
    return out


def events(sim: SimCluster, kind: str) -> list[Any]:
    return [e for e in healing.events(leader_state(sim), 0, 10_000) if e.kind == kind]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_dead_node_is_healed_around_and_its_return_serves_nothing_stale(seed: int) -> None:
    sim = started(nodes=5, seed=seed)
    data = random.Random(seed).randbytes(40 * MiB)
    try:
        sim.run(write(sim, "a", data))
        holders = sorted(leader_state(sim).idx.egroups_on)
        victim = random.Random(seed).choice(holders)
        sim.crash(victim)
        sim.run(sim.wait_for(lambda: not under_replicated(sim, 2), 120, "full resiliency"))
        state = leader_state(sim)
        assert victim not in state.idx.egroups_on, f"seed {seed}: {victim} still listed"
        assert state.nodes()[victim].state == "DOWN"
        survivor = next(n for n in sorted(sim.nodes) if n != victim)
        assert sim.run(read_all(sim, survivor, "a")) == data, f"seed {seed}"
        assert events(sim, "rebuild_started"), f"seed {seed}: no rebuild_started event"
        sim.run(sim.wait_for(lambda: bool(events(sim, "rebuild_finished")), 30, "finished"))
        assert state.container("c").stats.rebuilt_bytes > 0  # type: ignore[union-attr]
        # The node returns: its old copies are surplus, never read, and swept.
        sim.run(sim.restart(victim))
        sim.run(sim.wait_for(lambda: victim in leader_state(sim).up_nodes(), 30, "back UP"))
        # Its copies were replaced: a read through it uses the new ones.
        assert sim.run(read_all(sim, victim, "a")) == data, f"seed {seed}"
        sim.run(sim.wait_for(lambda: not sim.check_disks().unreferenced, 120, "surplus swept"))
        assert not under_replicated(sim, 2)
    finally:
        sim.close()
