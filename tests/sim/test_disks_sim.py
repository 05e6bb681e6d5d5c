"""Failed, wiped and full disks on simulated clusters."""

from __future__ import annotations

import dataclasses
import random

import pytest

from fabric.config import ClusterConfig, NodeConfig
from fabric.errors import InsufficientStorage
from fabric.extents.policy import ContainerPolicy
from fabric.metadata import healing, keys
from fabric.metadata.state import MetadataState
from nodes.services.storage import SUFFIX
from nodes.simcluster import SimCluster
from tests.sim.conftest import chunks, config, started

MiB = 1 << 20


def leader_state(sim: SimCluster) -> MetadataState:
    leader = sim.leader()
    assert leader is not None, f"seed {sim.seed}: no leader"
    return sim.nodes[leader].metadata.state


async def write(sim: SimCluster, name: str, data: bytes, via: str = "n1") -> None:
    g = sim.nodes[via]
    if g.metadata.state.container("c") is None:
        await g.catalog.create_container("c", ContainerPolicy(rf=2))
    await g.catalog.create_vdisk(name, "c", len(data))
    await g.writer.write(name, 0, len(data), chunks(data))


async def read_all(sim: SimCluster, via: str, name: str) -> bytes:
    _, _, stream = await sim.nodes[via].reader.read(name, 0, None)
    return b"".join([c async for c in stream])


def whole(sim: SimCluster, rf: int = 2) -> bool:
    """Every group with data has ``rf`` copies on UP nodes, none lost with a disk."""
    if sim.leader() is None:
        return False
    state = leader_state(sim)
    up = state.up_nodes()
    for _, item in state.scan(keys.EGROUP):
        eg = item.value
        short = eg.lost_copies or sum(n in up for n in eg.replicas) < rf
        if eg.extents and not eg.strip and short:
            return False
    return True


def node_with_groups_on(sim: SimCluster, disk_index: int) -> str:
    for node_id in sorted(sim.nodes):
        if any(p.endswith(SUFFIX) for p in sim.disks[node_id][disk_index].files()):
            return node_id
    raise AssertionError("no node has a group on that disk")


@pytest.mark.parametrize("seed", range(4))
def test_a_failed_disk_is_marked_and_its_copies_are_made_again(seed: int) -> None:
    sim = started(nodes=5, seed=seed)
    data = random.Random(seed).randbytes(48 * MiB)
    try:
        sim.run(write(sim, "a", data))
        victim = node_with_groups_on(sim, 1)
        on_disk = {p[: -len(SUFFIX)] for p in sim.disks[victim][1].files() if p.endswith(SUFFIX)}
        sim.disks[victim][1].failed = True

        def failed() -> bool:
            record = leader_state(sim).value(keys.disk_key(victim, "disk1"))
            return record is not None and record.state == "FAILED"

        sim.run(sim.wait_for(failed, 30, f"disk1 of {victim} FAILED in the metadata"))

        def forgotten() -> bool:
            state = leader_state(sim)
            held = set(sim.nodes[victim].storage.egroups())
            return all(
                (eg := state.egroup(e)) is None or victim not in eg.replicas or e in held
                for e in on_disk
            )

        sim.run(sim.wait_for(forgotten, 30, "the failed disk's copies forgotten"))
        sim.run(sim.wait_for(lambda: whole(sim), 120, "every copy made again"))
        state = leader_state(sim)
        assert forgotten(), f"seed {seed}: a copy on the failed disk is listed again"
        assert victim in state.up_nodes(), "a node with one good disk keeps serving"
        assert sim.run(read_all(sim, victim, "a")) == data
        kinds = [e.kind for e in healing.events(state, 0, 1000)]
        assert "disk_state" in kinds and "copies_lost" in kinds, kinds
        sim.check_disks()
    finally:
        sim.close()


def test_a_wiped_disk_does_not_count_as_holding_its_copies() -> None:
    """The bug of the issue: a disk wiped while its node was down still counted."""
    sim = started(nodes=5, seed=7)
    data = random.Random(7).randbytes(32 * MiB)
    try:
        sim.run(write(sim, "a", data))
        victim = node_with_groups_on(sim, 0)
        files = sim.disks[victim][0].files()
        wiped = sorted(p[: -len(SUFFIX)] for p in files if p.endswith(SUFFIX))
        sim.crash(victim)
        for path in list(sim.disks[victim][0].files()):
            if path.endswith(SUFFIX):
                sim.disks[victim][0]._files.pop(path)
        sim.run(sim.restart(victim))

        def forgotten() -> bool:
            state = leader_state(sim)
            held = set(sim.nodes[victim].storage.egroups())
            groups = [eg for e in wiped if (eg := state.egroup(e)) is not None]
            return all(victim not in eg.replicas or eg.egid in held for eg in groups)

        sim.run(sim.wait_for(forgotten, 60, "the wiped copies forgotten"))
        sim.run(sim.wait_for(lambda: whole(sim), 120, "every copy made again"))
        # Now the other copy's node can die: the data is still there twice elsewhere.
        state = leader_state(sim)
        eg = state.egroup(wiped[0])
        assert eg is not None
        other = next(n for n in eg.replicas if n != victim and n != sim.leader())
        sim.crash(other)
        assert sim.run(read_all(sim, sim.leader() or "", "a")) == data
    finally:
        sim.close()


def small_disks(nodes: int, capacity: int) -> ClusterConfig:
    base = config(nodes)
    return dataclasses.replace(
        base,
        nodes=tuple(
            NodeConfig(n.id, n.host, n.port, n.disks, {}, (capacity,) * len(n.disks))
            for n in base.nodes
        ),
    )


def test_a_full_cluster_refuses_writes_with_507_and_takes_them_again_when_freed() -> None:
    sim = SimCluster(small_disks(3, 24 * MiB), seed=5)
    try:
        sim.run(sim.start_all())
        sim.run(sim.wait_for(lambda: all(n.registered for n in sim.nodes.values()), 30, "up"))
        kept = random.Random(1).randbytes(16 * MiB)
        sim.run(write(sim, "kept", kept))
        # 3 nodes x 2 disks x 24 MiB at RF2: about 72 MiB of data fit, with the marks.
        with pytest.raises(InsufficientStorage, match="container 'c'"):
            for i in range(20):
                sim.run(write(sim, f"fill{i}", random.Random(i).randbytes(8 * MiB)))
        state = leader_state(sim)
        full = [d for n in sim.nodes for d in healing.disks_of(state, n) if d.state == "FULL"]
        assert full, "no disk was recorded FULL"
        assert sim.run(read_all(sim, "n2", "kept")) == kept  # reads go on
        # Free space: deleting vdisks lets the scanner collect their groups.
        for i in range(20):
            if sim.nodes["n1"].metadata.state.vdisk_by_ref(f"fill{i}") is not None:
                sim.run(sim.nodes["n1"].catalog.delete_vdisk(f"fill{i}"))

        def room() -> bool:
            st = leader_state(sim)
            return not any(d.state == "FULL" for n in sim.nodes for d in healing.disks_of(st, n))

        sim.run(sim.wait_for(room, 120, "the disks below the low-water mark"))
        again = random.Random(9).randbytes(8 * MiB)
        sim.run(write(sim, "again", again))
        assert sim.run(read_all(sim, "n3", "again")) == again
        sim.check_disks()
    finally:
        sim.close()
