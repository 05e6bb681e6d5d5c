"""Scrubbing on simulated clusters: every bit flip at rest is found and repaired."""

from __future__ import annotations

import dataclasses
import os
import random

import pytest

from fabric.extents.policy import ContainerPolicy
from fabric.metadata import healing
from fabric.metadata.commands import SetScrubSettings
from fabric.metadata.state import MetadataState
from nodes.services.storage import egroup_file
from nodes.simcluster import SimCluster
from tests.sim.conftest import chunks, started

MiB = 1 << 20
SEEDS = (
    [int(os.environ["SCRUB_SEED"])]
    if "SCRUB_SEED" in os.environ
    else list(range(int(os.environ.get("SCRUB_SEEDS", "12"))))
)


def leader_state(sim: SimCluster) -> MetadataState:
    leader = sim.leader()
    assert leader is not None, f"seed {sim.seed}: no leader"
    return sim.nodes[leader].metadata.state


async def fill(sim: SimCluster, seed: int) -> None:
    g = sim.nodes["n1"]
    await g.catalog.create_container("rep", ContainerPolicy(rf=2))
    await g.catalog.create_container("cold", ContainerPolicy(rf=2, ec_k=2, ec_m=1, ec_delay_s=0))
    for name, container, size in (("a", "rep", 20 * MiB), ("b", "cold", 24 * MiB)):
        data = random.Random(f"{seed}/{name}").randbytes(size)
        await g.catalog.create_vdisk(name, container, size)
        await g.writer.write(name, 0, size, chunks(data))


def ec_pending(sim: SimCluster) -> int:
    if sim.leader() is None:
        return -1
    state = leader_state(sim)
    return len(state.idx.ec_pending.get("cold", ()))


def flip_bits(sim: SimCluster, rng: random.Random, count: int) -> set[tuple[str, str, int]]:
    """Flip one byte inside ``count`` distinct live extent copies or parity groups:
    never both copies of one extent, nor two members of one strip (beyond what its one
    parity can mend; that is data loss, not something a scrub can undo)."""
    state = leader_state(sim)
    copies = []
    for _, item in state.scan("extent/"):
        ext = item.value
        eg = state.egroup(ext.egroup)
        assert eg is not None
        for node in eg.replicas:
            copies.append((node, ext.egroup, ext.offset, ext.stored_len, eg.strip))
    for _, item in state.scan("strip/"):
        strip = item.value
        for member in strip.parity:  # parity has no checksum: anywhere in its records
            copies.append((member.node, member.egid, 0, strip.parity_bytes, strip.id))
    flipped: set[tuple[str, str, int]] = set()
    touched: set[tuple[str, int]] = set()
    strips: set[str] = set()
    for node, egid, offset, length, strip in rng.sample(copies, len(copies)):
        if len(flipped) == count:
            break
        if (egid, offset) in touched or strip in strips:
            continue
        touched.add((egid, offset))
        if strip:
            strips.add(strip)
        disk = next(d for d in sim.disks[node] if d.contents(egroup_file(egid)) is not None)
        disk.corrupt(egroup_file(egid), offset + rng.randrange(length), 1 << rng.randrange(8))
        flipped.add((node, egid, offset))
    return flipped


async def scrub_now(sim: SimCluster) -> None:
    g = sim.nodes[sorted(sim.nodes)[0]]
    current = healing.effective_scrub(g.metadata.state, sim.config.scrub)
    result = await g.metadata.propose(
        SetScrubSettings(dataclasses.replace(current, run_now=current.run_now + 1))
    )
    assert result.ok, result.message


@pytest.mark.parametrize("seed", SEEDS)
def test_every_flip_at_rest_is_found_and_repaired_within_one_pass(seed: int) -> None:
    sim = started(nodes=5, seed=seed)
    rng = random.Random(seed)
    try:
        sim.run(fill(sim, seed))
        sim.run(sim.wait_for(lambda: ec_pending(sim) == 0, 120, "EC of every cold group"))
        flipped = flip_bits(sim, rng, 12)
        passes = {n: node.scrubber.stats.passes for n, node in sim.nodes.items()}
        sim.run(scrub_now(sim))
        sim.run(
            sim.wait_for(
                lambda: all(sim.nodes[n].scrubber.stats.passes > p for n, p in passes.items()),
                120,
                "a scrub pass on every node",
            )
        )
        found = sum(node.scrubber.stats.errors_found for node in sim.nodes.values())
        repaired = sum(node.scrubber.stats.repaired for node in sim.nodes.values())
        assert found == len(flipped), f"seed {seed}: found {found} of {len(flipped)} flips"
        assert repaired == len(flipped), f"seed {seed}: repaired {repaired} of {len(flipped)}"
        sim.check_disks()  # every copy of every extent matches its checksum again
        state = leader_state(sim)
        log = healing.events(state, 0, 10_000)
        assert [e.kind for e in log].count("scrub_repaired") == len(flipped), f"seed {seed}"
        cycles = {e.node for e in log if e.kind == "scrub_cycle"}
        finders = {n for n, node in sim.nodes.items() if node.scrubber.stats.errors_found}
        assert finders <= cycles, f"seed {seed}: passes recorded by {cycles}, not {finders}"
    finally:
        sim.close()


def test_the_cycle_alone_finds_flips_no_client_reads() -> None:
    """No ``--now``: a node whose last pass is older than ``cycle_s`` starts the next."""
    sim = started(nodes=3, seed=4)
    try:
        sim.run(fill(sim, 4))
        sim.run(sim.wait_for(lambda: ec_pending(sim) == 0, 120, "EC of every cold group"))
        flipped = flip_bits(sim, random.Random(4), 3)

        async def short_cycle() -> None:
            g = sim.nodes["n1"]
            settings = dataclasses.replace(sim.config.scrub, cycle_s=30.0)
            assert (await g.metadata.propose(SetScrubSettings(settings))).ok

        sim.run(short_cycle())
        sim.run(
            sim.wait_for(
                lambda: sum(n.scrubber.stats.repaired for n in sim.nodes.values()) == len(flipped),
                120,
                "every flip repaired by the next pass",
            )
        )
        sim.check_disks()
    finally:
        sim.close()


def test_the_check_fires_when_a_scrub_misses_flips(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrubber that reads but lets what it finds go: the test above fails."""
    from nodes.services.scrubber import Scrubber

    async def shrug(*args: object) -> None:
        return None

    monkeypatch.setattr(Scrubber, "_found", shrug)
    monkeypatch.setattr(Scrubber, "_scrub_parity", shrug)
    with pytest.raises(AssertionError, match="found 0 of 12"):
        test_every_flip_at_rest_is_found_and_repaired_within_one_pass(0)


def test_the_disk_check_fires_when_flips_stay() -> None:
    """``check_disks``, which the test above ends with, sees a flip nobody mended."""
    sim = started(nodes=3, seed=5)
    try:
        sim.run(fill(sim, 5))
        sim.run(sim.wait_for(lambda: ec_pending(sim) == 0, 120, "EC of every cold group"))
        flip_bits(sim, random.Random(5), 1)
        with pytest.raises(AssertionError, match=r"checksum|bad"):
            sim.check_disks()
    finally:
        sim.close()


def test_parity_is_never_recomputed_from_bad_data() -> None:
    """The parity check encodes from the data members only when every live extent in
    the window passes its checksum: a flipped data byte is not spread into the parity."""
    from nodes.services.strips import layout_of

    sim = started(nodes=3, seed=6)
    try:
        sim.run(fill(sim, 6))
        sim.run(sim.wait_for(lambda: ec_pending(sim) == 0, 120, "EC of every cold group"))
        state = leader_state(sim)
        _, item = next(iter(state.scan("strip/")))
        strip = item.value
        holder = sim.nodes[strip.parity[0].node].scrubber
        lay = layout_of(strip)
        assert sim.run(holder._parity_from_data(strip, lay, 0, 0, 1)) is not None
        member = strip.data[0]
        _, ext = next(iter(state.extents_in(member.egid)))
        for disk in sim.disks[member.node]:
            if disk.contents(egroup_file(member.egid)) is not None:
                disk.corrupt(egroup_file(member.egid), ext.offset)
        chunk = ext.offset // lay.chunk_bytes
        assert sim.run(holder._parity_from_data(strip, lay, 0, chunk, 1)) is None
    finally:
        sim.close()
