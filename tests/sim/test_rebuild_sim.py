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
        sim.check_disks()  # every listed copy is on its disk, every extent intact
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


def test_rf3_survives_two_losses_and_heals_both() -> None:
    sim = started(nodes=6, seed=11)
    data = random.Random(11).randbytes(24 * MiB)
    try:
        sim.run(write(sim, "a", data, rf=3))
        # Two that are not voters: losing two of three voters would stop the metadata.
        holders = sorted(leader_state(sim).idx.egroups_on)
        victims = [n for n in holders if n not in sim.config.voters][:2]
        assert len(victims) == 2
        for v in victims:
            sim.crash(v)
        sim.run(sim.wait_for(lambda: not under_replicated(sim, 3), 180, "full RF3 again"))
        state = leader_state(sim)
        assert not any(v in state.idx.egroups_on for v in victims)
        assert sim.run(read_all(sim, sim.leader() or "", "a")) == data
        sim.check_disks()
    finally:
        sim.close()


def test_a_lost_rack_is_rebuilt_across_the_racks_left() -> None:
    from fabric.config import load_config

    config = load_config(os.path.join(os.path.dirname(__file__), "../../configs/three-racks.toml"))
    sim = SimCluster(config, seed=3)
    data = random.Random(3).randbytes(24 * MiB)
    try:
        sim.run(sim.start_all())
        sim.run(sim.wait_for(lambda: all(n.registered for n in sim.nodes.values()), 30, "up"))
        sim.run(write(sim, "a", data))
        rack = {n.id: n.labels["rack"] for n in config.nodes}
        for node in ("a1", "a2"):
            sim.crash(node)
        sim.run(sim.wait_for(lambda: not under_replicated(sim, 2), 180, "full RF2 again"))
        state = leader_state(sim)
        for _, item in state.scan("egroup/"):
            eg = item.value
            if eg.extents:
                assert len({rack[n] for n in eg.replicas}) == 2, f"{eg.egid}: {eg.replicas}"
        assert sim.run(read_all(sim, "b1", "a")) == data
    finally:
        sim.close()


def test_the_disk_check_fires_on_a_rebuild_that_commits_without_copying(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fabric.wire.messages import PullEgroup, PullReply
    from nodes.services.copier import Copier

    async def pretend(self: Copier, msg: PullEgroup) -> PullReply:
        return PullReply(0, 0)

    monkeypatch.setattr(Copier, "pull", pretend)
    with pytest.raises(AssertionError, match="has no file on"):
        test_a_dead_node_is_healed_around_and_its_return_serves_nothing_stale(0)


def test_a_rebuild_does_not_copy_a_bad_extent_and_says_so() -> None:
    """The one surviving copy has a flipped byte: no copy is made from it."""
    from nodes.services.storage import egroup_file

    sim = started(nodes=4, seed=8)
    data = random.Random(8).randbytes(8 * MiB)
    try:
        sim.run(write(sim, "a", data))
        state = leader_state(sim)
        _, ext = next(iter(state.scan("extent/")))
        eg = state.egroup(ext.value.egroup)
        assert eg is not None
        victim, keeper = eg.replicas
        for disk in sim.disks[keeper]:
            if disk.contents(egroup_file(eg.egid)) is not None:
                disk.corrupt(egroup_file(eg.egid), ext.value.offset + 10)
        sim.crash(victim)
        sim.run(sim.wait_for(lambda: bool(events(sim, "rebuild_stuck")), 120, "stuck event"))
        stuck = events(sim, "rebuild_stuck")[0]
        assert "no source holds a good copy" in stuck.message, stuck.message
        assert leader_state(sim).egroup(eg.egid).replicas == eg.replicas  # type: ignore[union-attr]
    finally:
        sim.close()
