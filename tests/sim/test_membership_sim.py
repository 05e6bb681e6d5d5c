"""Nodes and voters join and leave a running simulated cluster (Raft membership changes
through the node layer, every Raft checker watching)."""

from __future__ import annotations

import os
import random

import pytest

from fabric.config import NodeConfig
from fabric.extents.policy import ContainerPolicy
from fabric.metadata.commands import SetMember, SetNodeDrain
from fabric.metadata.records import MemberRecord
from fabric.metadata.state import MetadataState
from nodes.simcluster import SimCluster
from tests.sim.conftest import chunks, started

MiB = 1 << 20
SEEDS = (
    [int(os.environ["MEMBERS_SEED"])]
    if "MEMBERS_SEED" in os.environ
    else list(range(int(os.environ.get("MEMBERS_SEEDS", "4"))))
)


def leader_state(sim: SimCluster) -> MetadataState:
    leader = sim.leader()
    assert leader is not None, f"seed {sim.seed}: no leader"
    return sim.nodes[leader].metadata.state


async def write(sim: SimCluster, via: str, name: str, data: bytes) -> None:
    g = sim.nodes[via]
    if g.metadata.state.container("c") is None:
        await g.catalog.create_container("c", ContainerPolicy(rf=2))
    await g.catalog.create_vdisk(name, "c", len(data))
    await g.writer.write(name, 0, len(data), chunks(data))


async def read_all(sim: SimCluster, via: str, name: str) -> bytes:
    _, _, stream = await sim.nodes[via].reader.read(name, 0, None)
    return b"".join([c async for c in stream])


def voters_agree(sim: SimCluster, want: set[str]) -> bool:
    return all(set(n.metadata.raft.voters) == want for n in sim.nodes.values() if n.metadata.raft)


async def add(sim: SimCluster, via: str, node_id: str, port: int) -> None:
    """What ``fabric node add`` does: record the member, add it as a learner, start it."""
    g = sim.nodes[via]
    member = MemberRecord(node_id, "127.0.0.1", port, ("disk0", "disk1"), {})
    assert (await g.metadata.propose(SetMember(member, 1.0))).ok
    await g.metadata.change_membership("add_learner", node_id)
    sim.add_node(NodeConfig(node_id, "127.0.0.1", port, ("disk0", "disk1")))
    await sim.start_node(node_id)


async def drain(sim: SimCluster, via: str, node: str) -> None:
    g = sim.nodes[via]
    assert (await g.metadata.propose(SetNodeDrain(node, True, 1.0))).ok
    await sim.wait_for(
        lambda: (
            sim.leader() is not None
            and not leader_state(sim).idx.egroups_on.get(node)
            and not leader_state(sim).idx.strips_on.get(node)
        ),
        120,
        f"{node} drained",
    )


def whole(sim: SimCluster, dead: str) -> bool:
    if sim.leader() is None:
        return False
    state = leader_state(sim)
    up = state.up_nodes() - {dead}
    return all(
        sum(n in up for n in item.value.replicas) >= 2
        for _, item in state.scan("egroup/")
        if item.value.extents and not item.value.strip
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_add_a_voter_remove_one_and_replace_a_dead_one(seed: int) -> None:
    sim = started(nodes=4, seed=seed)  # voters n1 n2 n3, n4 a member
    rng = random.Random(seed)
    data = {name: rng.randbytes(16 * MiB) for name in ("a", "b", "c")}
    try:
        sim.run(write(sim, "n1", "a", data["a"]))
        # A new node joins and becomes a voter (four voters).
        sim.run(add(sim, "n2", "n5", 7905))
        sim.run(sim.nodes["n3"].metadata.change_membership("promote", "n5"))
        sim.run(sim.wait_for(lambda: voters_agree(sim, {"n1", "n2", "n3", "n5"}), 30, "4 voters"))
        sim.run(write(sim, "n5", "b", data["b"]))
        # A voter leaves (maybe the leader itself): drained first, then removed.
        leaving = rng.choice(["n1", "n2", "n3"])
        stay = next(n for n in ("n1", "n2", "n3", "n5") if n != leaving)
        sim.run(drain(sim, stay, leaving))
        # Asked of the leaving node itself: it may never hear that its removal
        # committed (the leader stops replicating to it), yet the call must return.
        sim.run(sim.nodes[leaving].metadata.change_membership("remove", leaving))
        remaining = {"n1", "n2", "n3", "n5"} - {leaving}
        sim.run(sim.wait_for(lambda: voters_agree(sim, remaining), 30, "the removal everywhere"))
        sim.crash(leaving)
        # A voter dies and is replaced: n4 (a member) takes its vote.
        dead = rng.choice(sorted(remaining - {"n5"}))
        sim.crash(dead)
        alive = next(n for n in sorted(remaining) if n != dead)
        sim.run(sim.nodes[alive].metadata.change_membership("remove", dead))
        sim.run(sim.nodes[alive].metadata.change_membership("add_learner", "n4"))
        sim.run(sim.nodes[alive].metadata.change_membership("promote", "n4"))
        final = (remaining - {dead}) | {"n4"}
        sim.run(sim.wait_for(lambda: voters_agree(sim, final), 30, "the replacement everywhere"))
        sim.run(sim.wait_for(lambda: whole(sim, dead), 120, "the dead voter's copies rebuilt"))
        sim.run(write(sim, "n4", "c", data["c"]))
        for name, expected in data.items():
            assert sim.run(read_all(sim, "n4", name)) == expected, f"seed {seed}: {name}"
        # Restarts keep the configuration (snapshots and the WAL carry it).
        victim = rng.choice(sorted(final))
        sim.crash(victim)
        sim.run(sim.restart(victim))
        sim.run(sim.wait_for(lambda: voters_agree(sim, final), 30, "after a restart"))
    finally:
        sim.close()


def test_a_voter_that_lost_its_raft_state_waits_to_be_re_added() -> None:
    sim = started(nodes=3, seed=21)
    data = random.Random(21).randbytes(8 * MiB)
    try:
        sim.run(write(sim, "n1", "a", data))
        leader = sim.leader()
        victim = next(n for n in ("n1", "n2", "n3") if n != leader)
        sim.crash(victim)
        disk0 = sim.disks[victim][0]
        for path in disk0.files():  # its first disk replaced: Raft state, mark, groups gone
            disk0._files.pop(path)
        assert sim.disks[victim][1].contents("member") is not None
        node = sim.run(sim.restart(victim))
        assert node.metadata.state_lost and node.metadata.raft.abstaining  # type: ignore[union-attr]
        sim.run(sim.wait_for(lambda: node.registered, 30, "the node registered again"))
        assert any("Raft state lost" in p for p in node.problems())
        # With the other two it is no majority: the one left alone elects no leader.
        other = next(n for n in ("n1", "n2", "n3") if n not in (victim, sim.leader()))
        sim.crash(sim.leader() or "")
        sim.run(sim.sleep(10))
        assert sim.leader() is None, "an abstaining voter helped elect a leader"
        sim.run(sim.restart(next(n for n in ("n1", "n2", "n3") if n not in sim.nodes)))
        sim.run(sim.wait_for(lambda: sim.leader() is not None, 30, "a leader again"))

        async def rejoin() -> None:
            g = sim.nodes[other]
            await g.metadata.change_membership("remove", victim)
            await g.metadata.change_membership("add_learner", victim)
            await g.metadata.change_membership("promote", victim)

        sim.run(rejoin())
        sim.run(sim.wait_for(lambda: not node.metadata.raft.abstaining, 30, "re-added"))  # type: ignore[union-attr]
        sim.run(sim.wait_for(lambda: voters_agree(sim, {"n1", "n2", "n3"}), 30, "3 voters"))
        assert sim.run(read_all(sim, victim, "a")) == data
    finally:
        sim.close()


def test_a_follower_asked_to_remove_itself_returns() -> None:
    """The leader stops replicating to a removed follower once the removal commits: the
    follower must not wait to apply that index (it may never hear of it)."""
    sim = started(nodes=4, seed=3)
    try:
        follower = next(n for n in ("n1", "n2", "n3") if n != sim.leader())
        sim.run(sim.nodes[follower].metadata.change_membership("remove", follower))
        rest = {"n1", "n2", "n3"} - {follower}
        sim.run(
            sim.wait_for(
                lambda: set(sim.nodes[sim.leader() or "n4"].metadata.raft.voters) == rest,
                10,
                "removed",
            )
        )  # type: ignore[union-attr]
    finally:
        sim.close()
