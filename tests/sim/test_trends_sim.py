"""The console's charts read the leader's samples of the cluster: its disk throughput
must add up to the bytes that reached the disks, its capacity must be the containers',
and a change of leader must start the charts again rather than join two leaders'."""

from __future__ import annotations

import itertools
import random

from fabric import limits
from fabric.extents.policy import ContainerPolicy
from nodes.services.trends import Sample
from nodes.simcluster import SimCluster
from tests.sim.conftest import chunks

MiB = 1 << 20


def on_disks(sim: SimCluster) -> int:
    return sum(sum(n.storage.bytes_written.values()) for n in sim.nodes.values())


def integral(samples: list[Sample]) -> float:
    """Bytes the rates account for between the first sample and the last."""
    return sum(
        (s.written_bytes_per_s or 0.0) * (s.wall - before.wall)
        for before, s in itertools.pairwise(samples)
    )


def test_the_leaders_rates_add_up_to_the_bytes_on_every_disk(sim: SimCluster) -> None:
    leader = sim.nodes[sim.leader() or ""]
    sample_s = limits.TRENDS_SAMPLE_S

    async def story() -> None:
        await sim.wait_for(lambda: len(leader.trends.samples) >= 1, 2 * sample_s, "a sample")
        g = sim.nodes["n2"]
        await g.catalog.create_container("c", ContainerPolicy(rf=2))
        for i in range(3):
            await g.catalog.create_vdisk(f"v{i}", "c", 4 * MiB)
            await g.writer.write(f"v{i}", 0, 4 * MiB, chunks(random.Random(i).randbytes(4 * MiB)))
            await sim.sleep(sample_s * 1.5)  # a write in more than one sample's window
        await sim.wait_for(
            lambda: abs(integral(list(leader.trends.samples)) - on_disks(sim)) < 1,
            6 * sample_s,
            "the rates to account for every byte written",
        )

    sim.run(story())
    samples = list(leader.trends.samples)
    assert on_disks(sim) >= 2 * 12 * MiB, f"seed {sim.seed}"
    assert sum(1 for s in samples if s.written_bytes_per_s) >= 3, f"seed {sim.seed}: {samples}"
    assert all(s.written_bytes_per_s is None or s.written_bytes_per_s >= 0 for s in samples)
    last = samples[-1]
    assert last.logical_bytes == 12 * MiB, f"seed {sim.seed}"
    assert last.physical_bytes >= 2 * last.logical_bytes, f"seed {sim.seed}"
    assert 0 < last.disk_used_bytes <= last.disk_capacity_bytes


def test_a_new_leader_starts_the_charts_again(sim: SimCluster) -> None:
    old = sim.nodes[sim.leader() or ""]
    sample_s = limits.TRENDS_SAMPLE_S

    async def story() -> None:
        await sim.wait_for(lambda: len(old.trends.samples) >= 2, 3 * sample_s)
        cut_at = old.clock.wall()
        sim.net.isolate(old.id, sorted(sim.nodes))
        await sim.wait_for(lambda: sim.leader() not in (None, old.id), 30, "a new leader")
        new = sim.nodes[sim.leader() or ""]
        await sim.wait_for(lambda: len(new.trends.samples) >= 1, 2 * sample_s)
        follower = next(n for n in sim.nodes.values() if n not in (new, old))
        trends = (await follower.cluster_view(trends=limits.TRENDS_KEPT))["trends"]
        assert trends["sampled_by"] == new.id, f"seed {sim.seed}: {trends}"
        assert all(s["wall"] > cut_at for s in trends["samples"]), f"seed {sim.seed}"
        # The old leader hears of the new one and follows: what it sampled is dropped.
        sim.net.heal()
        await sim.wait_for(
            lambda: not old.metadata.is_leader and not old.trends.samples,
            3 * sample_s,
            "the deposed leader to drop its samples",
        )

    sim.run(story())
