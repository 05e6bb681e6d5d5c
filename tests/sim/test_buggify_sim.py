"""BUGGIFY on simulated clusters: every point fires on some seed, and a cluster whose
points misbehave still loses nothing, mends everything and passes every checker."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import AsyncIterator

from fabric import buggify
from fabric.extents.policy import ContainerPolicy
from fabric.metadata import healing
from fabric.metadata.commands import SetScrubSettings
from fabric.ports import Runtime
from nodes.simcluster import SimCluster
from tests.sim.conftest import chunks, started

MiB = 1 << 20
SEEDS = (
    [int(os.environ["BUGGIFY_SEED"])]
    if "BUGGIFY_SEED" in os.environ
    else list(range(int(os.environ.get("BUGGIFY_SEEDS", "6"))))
)


async def workload(sim: SimCluster, data: dict[str, bytes]) -> str:
    """Replicated and erasure-coded vdisks, an image, a scrub pass; the image's vdisk."""
    g = sim.nodes["n1"]
    await g.catalog.create_container("rep", ContainerPolicy(rf=2))
    await g.catalog.create_container("cold", ContainerPolicy(rf=2, ec_k=2, ec_m=1, ec_delay_s=0))
    for name, container in (("a", "rep"), ("b", "cold")):
        await g.catalog.create_vdisk(name, container, len(data[name]))
        await g.writer.write(name, 0, len(data[name]), chunks(data[name]))

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data["img"]), MiB):
            yield data["img"][i : i + MiB]

    image = await g.images.create({"name": "disk"})
    done = await g.images.upload(image["id"], body())
    assert done["state"] == "ACTIVE", f"seed {sim.seed}: {done}"
    await sim.wait_for(lambda: ec_pending(sim) == 0, 120, "EC of every cold group")
    current = healing.effective_scrub(g.metadata.state, sim.config.scrub)
    passes = {n: node.scrubber.stats.passes for n, node in sim.nodes.items()}
    result = await g.metadata.propose(
        SetScrubSettings(dataclasses.replace(current, run_now=current.run_now + 1))
    )
    assert result.ok, result.message
    await sim.wait_for(
        lambda: all(sim.nodes[n].scrubber.stats.passes > p for n, p in passes.items()),
        120,
        "a scrub pass on every node",
    )
    record = g.metadata.state.image(image["id"])
    assert record is not None and record.vdisk_id, f"seed {sim.seed}: no vdisk for the image"
    return record.vdisk_id


def ec_pending(sim: SimCluster) -> int:
    leader = sim.leader()
    if leader is None:
        return -1
    return len(sim.nodes[leader].metadata.state.idx.ec_pending.get("cold", ()))


def under_replicated(sim: SimCluster) -> int:
    leader = sim.leader()
    if leader is None:
        return -1
    state = sim.nodes[leader].metadata.state
    up = state.up_nodes() & set(sim.nodes)
    return sum(
        1
        for _, item in state.scan("egroup/")
        if item.value.extents
        and not item.value.strip
        and sum(n in up for n in item.value.replicas) < 2
    )


async def read_all(sim: SimCluster, via: str, name: str) -> bytes:
    _, _, stream = await sim.nodes[via].reader.read(name, 0, None)
    return b"".join([c async for c in stream])


def run_seed(seed: int) -> dict[str, int]:
    sim = started(nodes=6, seed=seed, buggify=True)
    rng = random.Random(seed)
    data = {name: rng.randbytes(size) for name, size in (("a", 24 * MiB), ("b", 24 * MiB))}
    data["img"] = rng.randbytes(12 * MiB)
    try:
        image_vdisk = sim.run(workload(sim, data))
        # A node lost for good: its copies are rebuilt through the BUGGIFY'd copier.
        victim = next(n for n in sorted(sim.nodes, reverse=True) if n != sim.leader())
        sim.crash(victim)
        sim.run(sim.wait_for(lambda: under_replicated(sim) == 0, 300, "every group rebuilt"))
        via = sorted(sim.nodes)[0]
        for name in ("a", "b"):
            assert sim.run(read_all(sim, via, name)) == data[name], f"seed {seed}: vdisk {name}"
        assert sim.run(read_all(sim, via, image_vdisk)) == data["img"], f"seed {seed}: image"
        sim.check_disks()
        return buggify.fired_total([sim.buggify[n] for n in sorted(sim.buggify)])
    finally:
        sim.close()


def test_every_point_fires_and_the_cluster_survives_it() -> None:
    fired: dict[str, list[int]] = {site: [] for site in buggify.SITES}
    for seed in SEEDS:
        for site, count in run_seed(seed).items():
            assert count > 0
            fired[site].append(seed)
    if "BUGGIFY_SEED" not in os.environ:
        never = [site for site, seeds in fired.items() if not seeds]
        assert not never, f"seeds {SEEDS}: these BUGGIFY points never fired: {never}"


def test_the_points_follow_the_seed() -> None:
    """One seed enables the same points whatever order the code reaches them in; another
    seed enables another set."""
    sites = sorted(buggify.SITES)
    forward = buggify.for_node(7, "n1")
    backward = buggify.for_node(7, "n2")
    assert [forward.enabled(s) for s in sites] == [backward.enabled(s) for s in reversed(sites)][
        ::-1
    ]
    sets = {tuple(buggify.for_node(seed, "n1").enabled(s) for s in sites) for seed in range(20)}
    assert len(sets) > 1


def test_a_real_runtime_never_misbehaves() -> None:
    runtime = Runtime(clock=None, rng=random.Random(1), transport=None, disks=[])  # type: ignore[arg-type]
    assert runtime.buggify is buggify.OFF
    assert not any(buggify.OFF.fires(site) for site in buggify.SITES for _ in range(1000))
