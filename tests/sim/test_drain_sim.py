"""Draining a node before it leaves, and rebalancing onto a node that joined."""

from __future__ import annotations

import os
import random

import pytest

from fabric import limits
from fabric.extents.policy import ContainerPolicy
from fabric.metadata import healing, keys
from fabric.metadata.commands import SetNodeDrain
from fabric.metadata.state import MetadataState
from nodes.api_healing import drain_problem
from nodes.simcluster import SimCluster
from tests.sim.conftest import chunks, config, started

MiB = 1 << 20
SEEDS = (
    [int(os.environ["DRAIN_SEED"])]
    if "DRAIN_SEED" in os.environ
    else list(range(int(os.environ.get("DRAIN_SEEDS", "3"))))
)


def leader_state(sim: SimCluster) -> MetadataState:
    leader = sim.leader()
    assert leader is not None, f"seed {sim.seed}: no leader"
    return sim.nodes[leader].metadata.state


async def fill(
    sim: SimCluster, seed: int, ec: bool = True, size: int = 40 * MiB
) -> dict[str, bytes]:
    g = sim.nodes["n1"]
    await g.catalog.create_container("rep", ContainerPolicy(rf=2))
    written = {"a": random.Random(f"{seed}a").randbytes(size)}
    await g.catalog.create_vdisk("a", "rep", len(written["a"]))
    await g.writer.write("a", 0, len(written["a"]), chunks(written["a"]))
    if ec:
        await g.catalog.create_container(
            "cold", ContainerPolicy(rf=2, ec_k=2, ec_m=1, ec_delay_s=0)
        )
        written["b"] = random.Random(f"{seed}b").randbytes(24 * MiB)
        await g.catalog.create_vdisk("b", "cold", len(written["b"]))
        await g.writer.write("b", 0, len(written["b"]), chunks(written["b"]))
    return written


async def read_all(sim: SimCluster, via: str, name: str) -> bytes:
    _, _, stream = await sim.nodes[via].reader.read(name, 0, None)
    return b"".join([c async for c in stream])


def holds_nothing(sim: SimCluster, node: str) -> bool:
    if sim.leader() is None:
        return False
    state = leader_state(sim)
    return not state.idx.egroups_on.get(node) and not state.idx.strips_on.get(node)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_drained_node_holds_nothing_and_every_copy_lives_on(seed: int) -> None:
    sim = started(nodes=5, seed=seed)
    try:
        written = sim.run(fill(sim, seed))
        sim.run(
            sim.wait_for(lambda: not leader_state(sim).idx.ec_pending.get("cold"), 120, "EC done")
        )
        idx = leader_state(sim).idx
        victim = max(
            sorted(sim.nodes),
            key=lambda n: len(idx.egroups_on.get(n, ())) + len(idx.strips_on.get(n, ())),
        )
        assert not holds_nothing(sim, victim), "the victim holds data before the drain"

        async def drain() -> None:
            g = sim.nodes["n1"]
            assert drain_problem(g, victim) == ""
            assert (await g.metadata.propose(SetNodeDrain(victim, True, 1.0))).ok

        sim.run(drain())
        sim.run(sim.wait_for(lambda: holds_nothing(sim, victim), 180, f"{victim} drained"))
        state = leader_state(sim)
        for _, item in state.scan(keys.EGROUP):
            eg = item.value
            if eg.extents and not eg.strip:
                assert len(eg.replicas) == 2, f"seed {seed}: {eg.egid} has {eg.replicas}"
        reader = next(n for n in sorted(sim.nodes) if n != victim)
        for name, data in written.items():
            assert sim.run(read_all(sim, reader, name)) == data, f"seed {seed}: {name}"
        # The drained node can go: everything reads without it.
        sim.crash(victim)
        sim.run(sim.wait_for(lambda: sim.leader() is not None, 30, "a leader"))
        for name, data in written.items():
            assert sim.run(read_all(sim, reader, name)) == data, f"seed {seed}: {name}"
        kinds = [e.kind for e in healing.events(leader_state(sim), 0, 10_000)]
        assert "node_drain" in kinds
    finally:
        sim.close()


def test_a_drain_that_would_break_a_policy_is_refused() -> None:
    sim = started(nodes=3, seed=2)
    try:
        sim.run(sim.nodes["n1"].catalog.create_container("r3", ContainerPolicy(rf=3)))
        sim.run(sim.wait_for(lambda: leader_state(sim).container("r3") is not None, 10, "r3"))
        problem = drain_problem(sim.nodes["n1"], "n3")
        assert "container 'r3' needs 3 fault domains for RF3; only 2 would be left" in problem
    finally:
        sim.close()


def usage(state: MetadataState, nodes: list[str]) -> dict[str, int]:
    return {
        n: sum(eg.size for eg in state.egroups(sorted(state.idx.egroups_on.get(n, ()))))
        for n in nodes
    }


def test_a_node_that_joins_gets_its_share() -> None:
    sim = SimCluster(config(5), seed=6)
    try:
        for node in ("n1", "n2", "n3", "n4"):
            sim.run(sim.start_node(node))
        sim.run(sim.wait_for(lambda: all(n.registered for n in sim.nodes.values()), 30, "up"))
        written = sim.run(fill(sim, 6, ec=False, size=96 * MiB))
        before = usage(leader_state(sim), ["n1", "n2", "n3", "n4"])
        assert all(before.values())
        sim.run(sim.start_node("n5"))
        nodes = ["n1", "n2", "n3", "n4", "n5"]

        def even() -> bool:
            if sim.leader() is None:
                return False
            used = usage(leader_state(sim), nodes)
            mean = sum(used.values()) / len(used)
            slack = max(limits.REBALANCE_TOLERANCE * mean, limits.EGROUP_MAX_BYTES)
            return used["n5"] > 0 and max(used.values()) - min(used.values()) <= 2 * slack

        sim.run(sim.wait_for(even, 180, "usage even with n5"))
        assert sim.run(read_all(sim, "n5", "a")) == written["a"]
        kinds = [e.kind for e in healing.events(leader_state(sim), 0, 10_000)]
        assert "rebalance_started" in kinds
        sim.run(
            sim.wait_for(
                lambda: (
                    "rebalance_finished"
                    in [e.kind for e in healing.events(leader_state(sim), 0, 10_000)]
                ),
                60,
                "rebalance finished",
            )
        )
        sim.run(sim.wait_for(lambda: not sim.check_disks().unreferenced, 120, "moved copies gone"))
    finally:
        sim.close()
