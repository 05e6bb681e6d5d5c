"""Erasure coding on simulated clusters: conversion, degraded reads, rebuild, crashes."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from fabric.errors import BadRequest
from fabric.extents.erasure import layout
from fabric.extents.policy import ContainerPolicy
from fabric.sim.records import physical_bytes
from nodes.simcluster import SimCluster
from tests.sim.conftest import chunks, started

MiB = 1 << 20
# Seeds 150..946 once left a sequential write with three extent groups (two half full):
# two write batches into one group committed out of order, the one that filled and
# sealed it first, so the other was rewritten elsewhere; EC with k = 2 then never found
# a partner for the last group (nodes/services/writer.py, WriteCoordinator._append). The
# leader crash was not involved. Found by EC_SEEDS=1000; kept here so CI covers them.
EC_REGRESSION_SEEDS = [150, 189, 211, 228, 324, 383, 391, 403, 429, 452, 488, 523, 641, 718]
EC_REGRESSION_SEEDS += [730, 942, 946]
EC_SEEDS = (
    [int(os.environ["EC_SEED"])]
    if "EC_SEED" in os.environ
    else sorted(set(range(int(os.environ.get("EC_SEEDS", "24")))) | set(EC_REGRESSION_SEEDS))
)


async def read_all(sim: SimCluster, via: str, name: str) -> bytes:
    _, _, stream = await sim.nodes[via].reader.read(name, 0, None)
    return b"".join([c async for c in stream])


def _leader_state(sim: SimCluster) -> Any:
    leader = sim.leader()
    assert leader is not None, "no leader"
    return sim.nodes[leader].metadata.state


async def view(sim: SimCluster, name: str) -> dict[str, Any]:
    await sim.wait_for(lambda: sim.leader() is not None, 20, "a leader")
    v = await sim.nodes[sim.leader() or ""].cluster_view()
    return next(c for c in v["containers"] if c["name"] == name)


async def write_cold(sim: SimCluster, data: bytes, k: int = 4, m: int = 2) -> None:
    g = sim.nodes["n1"]
    await g.catalog.create_container("cold", ContainerPolicy(rf=2, ec_k=k, ec_m=m, ec_delay_s=0))
    await g.catalog.create_vdisk("img", "cold", len(data))
    await g.writer.write("img", 0, len(data), chunks(data))


def recount_physical(sim: SimCluster) -> int:
    """Physical bytes recomputed from extent-group and strip records (no stats)."""
    return physical_bytes(_leader_state(sim))


def test_4_2_costs_one_and_a_half_and_survives_any_two_kills() -> None:
    sim = started(nodes=7, seed=2)
    data = random.Random(1).randbytes(64 * MiB)
    try:
        sim.run(write_cold(sim, data))
        sim.run(sim.wait_for(lambda: _pending(sim) == 0, 60, "EC of every group"))
        c = sim.run(view(sim, "cold"))
        assert c["ec"] == "4+2" and c["ec_strips"] == 2
        expected = c["stored_bytes"] * 6 / 4
        assert abs(c["physical_bytes"] - expected) <= 0.05 * expected
        assert c["physical_bytes"] == recount_physical(sim)
        assert c["ec_savings_bytes"] == c["stored_bytes"] * 2 - c["physical_bytes"]
        sim.check_disks()
        rng = random.Random(3)
        for victims in (rng.sample(sorted(sim.nodes), 2) for _ in range(2)):
            for v in victims:
                sim.crash(v)
            survivor = next(n for n in sorted(sim.nodes))
            assert sim.run(read_all(sim, survivor, "img")) == data, f"killed {victims}"
            for v in victims:
                sim.run(sim.restart(v))
        sim.run(sim.wait_for(lambda: sim.leader() is not None, 20, "a leader"))
        sim.check_disks()
    finally:
        sim.close()


def _pending(sim: SimCluster) -> int:
    """Groups of the container still replicated; -1 while there is no leader to ask."""
    if sim.leader() is None:
        return -1
    state = _leader_state(sim)
    if state.get("container/cold") is None:
        return -1
    return sum(1 for _, it in state.scan("egroup/") if it.value.extents and not it.value.strip)


def test_lost_member_is_rebuilt_on_a_new_domain() -> None:
    sim = started(nodes=7, seed=5)
    data = random.Random(5).randbytes(32 * MiB)
    try:
        sim.run(write_cold(sim, data, k=2, m=1))
        sim.run(sim.wait_for(lambda: _pending(sim) == 0, 60, "EC of every group"))
        state = _leader_state(sim)
        strip = next(item.value for _, item in state.scan("strip/"))
        victim = strip.data[0].node
        if victim == sim.leader():
            victim = strip.data[1].node
        sim.crash(victim)

        def rebuilt() -> bool:
            st = sim.nodes[sim.leader() or "n1"].metadata.state
            return all(
                victim not in (m.node for m in it.value.members) for _, it in st.scan("strip/")
            )

        sim.run(sim.wait_for(rebuilt, 60, f"strips moved off {victim}"))
        c = sim.run(view(sim, "cold"))
        assert c["resiliency"] == 1
        assert sim.run(read_all(sim, sorted(sim.nodes)[0], "img")) == data
        sim.check_disks()
    finally:
        sim.close()


def test_corrupt_data_group_reads_through_reconstruction_and_is_repaired() -> None:
    sim = started(nodes=5, seed=7)
    data = random.Random(7).randbytes(16 * MiB)
    try:
        sim.run(write_cold(sim, data, k=2, m=1))
        sim.run(sim.wait_for(lambda: _pending(sim) == 0, 60, "EC of every group"))
        state = _leader_state(sim)
        strip = next(item.value for _, item in state.scan("strip/"))
        egid, node = strip.data[0].egid, strip.data[0].node
        path = f"{egid}.eg"
        disk = next(d for d in sim.disks[node] if path in d.files())
        good = disk.contents(path)
        disk.corrupt(path, 4096)
        assert sim.run(read_all(sim, node, "img")) == data
        # The single copy is rewritten in the background from what reconstruction made.
        sim.run(sim.wait_for(lambda: disk.contents(path) == good, 10, "the copy repaired"))
        sim.check_disks()
    finally:
        sim.close()


def test_policy_the_cluster_cannot_place_is_refused() -> None:
    sim = started(nodes=5, seed=1)
    try:
        with pytest.raises(BadRequest, match=r"ec 6\+3 needs 9 fault domains.*has 5"):
            sim.run(
                sim.nodes["n1"].catalog.create_container(
                    "wide", ContainerPolicy(rf=2, ec_k=6, ec_m=3)
                )
            )
    finally:
        sim.close()


def test_overwrite_and_delete_of_ec_data_then_strips_are_collected() -> None:
    sim = started(nodes=5, seed=9)
    rng = random.Random(9)
    data, new = rng.randbytes(16 * MiB), rng.randbytes(4 * MiB)
    try:
        sim.run(write_cold(sim, data, k=2, m=1))
        sim.run(sim.wait_for(lambda: _pending(sim) == 0, 60, "EC of every group"))

        async def overwrite() -> None:
            await sim.nodes["n2"].writer.write("img", MiB, len(new), chunks(new))

        sim.run(overwrite())
        expect = data[:MiB] + new + data[5 * MiB :]
        assert sim.run(read_all(sim, "n3", "img")) == expect
        sim.run(sim.nodes["n1"].catalog.delete_vdisk("img"))
        sim.run(sim.wait_for(lambda: recount_physical(sim) == 0, 120, "everything collected"))
        c = sim.run(view(sim, "cold"))
        assert c["physical_bytes"] == 0 and c["ec_strips"] == 0
        sim.check_disks()
    finally:
        sim.close()


@pytest.mark.parametrize("seed", EC_SEEDS)
def test_leader_crash_during_conversion_loses_nothing(seed: int) -> None:
    sim = started(nodes=5, seed=100 + seed)
    rng = random.Random(seed)
    data = rng.randbytes(16 * MiB)
    try:
        sim.run(write_cold(sim, data, k=2, m=1))

        def parity_written() -> bool:
            return any(
                "-p" in path for disks in sim.disks.values() for d in disks for path in d.files()
            )

        # Crash the leader while it converts: parity is being written, and a random
        # moment later (before, during or after the commit of the strip).
        sim.run(sim.wait_for(parity_written, 30, "a conversion under way"))
        sim.run(sim.sleep(rng.uniform(0.0, 0.02)))
        leader = sim.leader()
        assert leader is not None
        sim.crash(leader)
        sim.run(sim.sleep(rng.uniform(0.0, 2.0)))
        sim.run(sim.restart(leader))
        sim.run(sim.wait_for(lambda: _pending(sim) == 0, 120, "EC finished after the crash"))
        c = sim.run(view(sim, "cold"))
        assert c["physical_bytes"] == recount_physical(sim), f"seed {seed}: double counted"
        assert c["stored_bytes"] == 16 * MiB
        assert sim.run(read_all(sim, "n1", "img")) == data, f"seed {seed}: data lost"
        sim.check_disks()
    except AssertionError as exc:
        replay = f"EC_SEED={seed} pytest tests/sim/test_erasure_sim.py -k conversion_loses_nothing"
        pytest.fail(f"test seed {seed}: {exc}\n  replay: {replay}", pytrace=False)
    finally:
        sim.close()


def test_groups_sharing_domains_are_copied_apart_so_every_group_converts() -> None:
    """3+1 on 4 nodes from one writer: every group is (writer, X), and three groups can
    only span three domains if some copies move; the converter copies them."""
    copies = 0
    # Seeds whose placements include groups that share domains (three of these six
    # need copies with groups claimed four at a time; the guard below says if none does).
    for seed in range(5, 11):
        sim = started(nodes=4, seed=300 + seed)
        data = random.Random(seed).randbytes(24 * MiB)
        try:
            sim.run(write_cold(sim, data, k=3, m=1))
            sim.run(sim.wait_for(lambda s=sim: _pending(s) == 0, 60, f"seed {seed}: EC of all"))
            c = sim.run(view(sim, "cold"))
            assert c["physical_bytes"] == recount_physical(sim)
            assert (
                abs(c["physical_bytes"] - c["stored_bytes"] * 4 / 3)
                <= 0.05 * c["stored_bytes"] * 4 / 3
            )
            assert sim.run(read_all(sim, "n2", "img")) == data
            sim.check_disks()
            copies += sum(n.ec.stats.copies_made for n in sim.nodes.values())
        finally:
            sim.close()
    assert copies > 0, "no seed needed a copy: the test lost its point"


def _strips(sim: SimCluster) -> list[Any]:
    return [item.value for _, item in _leader_state(sim).scan("strip/")]


def header_bytes(sim: SimCluster) -> int:
    """What the strips' parity carries beyond the coded bytes: each parity chunk holds
    the ``k`` data-fragment headers and its own (``layout().header_bytes`` each)."""
    total = 0
    for strip in _strips(sim):
        lay = layout(strip.k, strip.m, strip.chunk_bytes)
        total += strip.m * (strip.length // strip.chunk_bytes) * (strip.k + 1) * lay.header_bytes
    return total


def settled(sim: SimCluster) -> bool:
    """Every group is in a strip and every emptied group is collected."""
    if _pending(sim) != 0:
        return False
    state = _leader_state(sim)
    return (
        not state.idx.collectable
        and recount_physical(sim) == state.container("cold").stats.physical_bytes
    )


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_a_small_container_ends_at_k_plus_m_over_k_and_reads_back_degraded(seed: int) -> None:
    """24 MiB in 2+1 is three 8 MiB groups: two make a strip, and the third, which no
    group will ever partner, is packed into a strip of its own (two 4 MiB members and
    4 MiB of parity) instead of staying at RF2 (which left the container at 1.67x).

    The bound, exactly: every member is a whole number of 1 MiB chunks (the extents are
    1 MiB of random data, stored as they are), so parity pays no rounding and the only
    padding is pyeclib's headers: physical = 1.5 x stored + ``header_bytes`` (2,880
    bytes here, 1.5001x). In general a strip may also pay, per parity member, up to one
    chunk for rounding its longest member up and one extent of imbalance between its
    members (packing keeps them within one extent of each other)."""
    sim = started(nodes=5, seed=seed)
    data = random.Random(seed).randbytes(24 * MiB)
    try:
        sim.run(write_cold(sim, data, k=2, m=1))
        sim.run(sim.wait_for(lambda: settled(sim), 120, "every group coded and collected"))
        c = sim.run(view(sim, "cold"))
        stored = c["stored_bytes"]
        assert stored == 24 * MiB and c["physical_bytes"] == recount_physical(sim)
        expected = stored * 3 // 2 + header_bytes(sim)
        assert c["physical_bytes"] == expected, (
            f"seed {seed}: physical {c['physical_bytes']}, expected {expected} for {stored}"
        )
        assert sum(n.ec.stats.strips_packed for n in sim.nodes.values()) == 1
        assert sim.run(read_all(sim, "n1", "img")) == data, f"seed {seed}"
        sim.check_disks(strict=True)
        # Kill a node holding a member of the packed strip (not the leader): its extents
        # read through reconstruction, then the member is rebuilt on another domain.
        packed = next(s for s in _strips(sim) if s.data[0].egid.startswith(s.id))
        victim = next(m.node for m in packed.data if m.node != sim.leader())
        sim.crash(victim)
        survivor = next(n for n in sorted(sim.nodes))
        assert sim.run(read_all(sim, survivor, "img")) == data, f"seed {seed}: degraded"
        sim.run(
            sim.wait_for(
                lambda: all(victim not in (m.node for m in s.members) for s in _strips(sim)),
                120,
                f"strips rebuilt off {victim}",
            )
        )
        assert sim.run(read_all(sim, survivor, "img")) == data, f"seed {seed}: rebuilt"
        # Back, the victim deletes its copy of the member that moved away.
        sim.run(sim.restart(victim))
        sim.run(sim.wait_for(lambda: not sim.check_disks().unreferenced, 60, "strays swept"))
        sim.check_disks(strict=True)
    except AssertionError as exc:
        replay = f"pytest tests/sim/test_erasure_sim.py -k 'k_plus_m_over_k and {seed}'"
        pytest.fail(f"test seed {seed}: {exc}\n  replay: {replay}", pytrace=False)
    finally:
        sim.close()


def test_the_tail_of_a_4_2_container_is_packed_four_ways() -> None:
    """40 MiB in 4+2: one strip of four 8 MiB groups, and the fifth group packed into
    four 2 MiB members with two parity members, so the whole container is at 1.5x (plus
    the headers, as above), and survives any two of a strip's members lost."""
    sim = started(nodes=7, seed=21)
    data = random.Random(21).randbytes(40 * MiB)
    try:
        sim.run(write_cold(sim, data, k=4, m=2))
        sim.run(sim.wait_for(lambda: settled(sim), 120, "every group coded and collected"))
        c = sim.run(view(sim, "cold"))
        stored = c["stored_bytes"]
        assert c["physical_bytes"] == stored * 3 // 2 + header_bytes(sim)
        assert sorted(len(s.data) for s in _strips(sim)) == [4, 4]
        # Two of the packed strip's members, at most one of them a voter (Raft keeps its
        # quorum: the metadata stays readable).
        packed = next(s for s in _strips(sim) if s.data[0].egid.startswith(s.id))
        voters = set(sim.config.voters)
        members = [m.node for m in packed.data if m.node != sim.leader()]
        victims = sorted(members, key=lambda n: (n in voters, n))[:2]
        assert sum(v in voters for v in victims) <= 1
        for v in victims:
            sim.crash(v)
        assert sim.run(read_all(sim, next(iter(sorted(sim.nodes))), "img")) == data
    finally:
        sim.close()


async def wait_closely(sim: SimCluster, predicate: Any, timeout_s: float, what: str) -> None:
    """``sim.wait_for``, looking every virtual millisecond: a claim may live only a few."""
    deadline = sim.loop.time() + timeout_s
    while not predicate():
        assert sim.loop.time() < deadline, f"seed {sim.seed}: {what} not reached in time"
        await sim.sleep(0.001)


PACK_SEEDS = EC_SEEDS[: max(4, len(EC_SEEDS) // 4)]


@pytest.mark.parametrize("seed", PACK_SEEDS)
def test_leader_crash_while_packing_the_tail_loses_nothing(seed: int) -> None:
    sim = started(nodes=5, seed=500 + seed)
    rng = random.Random(seed)
    data = rng.randbytes(24 * MiB)
    try:
        sim.run(write_cold(sim, data, k=2, m=1))

        def packing() -> bool:
            """The tail's packed members are claimed (their bytes follow, then the commit)."""
            state = sim.nodes[sim.leader() or "n1"].metadata.state
            claims = [item.value for _, item in state.scan("egroup-intent/")]
            return any(f.egid.endswith("-d0") for claim in claims for f in claim.files)

        # Crash the leader while it writes the packed members and their parity, at a
        # random moment before, during or after the commit.
        sim.run(wait_closely(sim, packing, 60, "the tail being packed"))
        sim.run(sim.sleep(rng.uniform(0.0, 0.03)))
        leader = sim.leader()
        assert leader is not None
        sim.crash(leader)
        sim.run(sim.sleep(rng.uniform(0.0, 2.0)))
        sim.run(sim.restart(leader))
        sim.run(sim.wait_for(lambda: settled(sim), 180, "packing finished after the crash"))
        c = sim.run(view(sim, "cold"))
        assert c["physical_bytes"] == c["stored_bytes"] * 3 // 2 + header_bytes(sim)
        assert sim.run(read_all(sim, "n1", "img")) == data, "data lost"
        # Files of an attempt the crash cut short are claimed: collected when it expires.
        sim.run(
            sim.wait_for(lambda: not list(_leader_state(sim).scan("egroup-intent/")), 120, "claims")
        )
        sim.run(sim.wait_for(lambda: not sim.check_disks().unreferenced, 120, "strays swept"))
        sim.check_disks(strict=True)
    except AssertionError as exc:
        replay = f"EC_SEED={seed} pytest tests/sim/test_erasure_sim.py -k while_packing"
        pytest.fail(f"test seed {seed}: {exc}\n  replay: {replay}", pytrace=False)
    finally:
        sim.close()


def test_a_corrupt_copy_met_while_converting_is_mended_before_it_is_coded() -> None:
    """Conversion keeps one copy of each group and checks every extent on the bytes it
    encodes: a copy with a flipped byte is repaired from its other replica and the strip
    is made on a later pass, from the mended copy. The writer's node holds a replica of
    every group, and a strip keeps at least one of those: all of them are corrupted."""
    sim = started(nodes=5, seed=31)
    data = random.Random(31).randbytes(16 * MiB)
    try:
        g = sim.nodes["n1"]
        policy = ContainerPolicy(rf=2, ec_k=2, ec_m=1, ec_delay_s=20.0)
        sim.run(g.catalog.create_container("cold", policy))
        sim.run(g.catalog.create_vdisk("img", "cold", len(data)))
        sim.run(g.writer.write("img", 0, len(data), chunks(data)))
        state = _leader_state(sim)
        flipped = 0
        for _, item in state.scan("egroup/"):
            for disk in sim.disks["n1"]:
                path = f"{item.value.egid}.eg"
                if path in disk.files():
                    disk.corrupt(path, 3 * MiB + 17)
                    flipped += 1
        assert flipped == 2, "the writer holds a replica of each of the two groups"
        sim.run(sim.wait_for(lambda: _pending(sim) == 0, 120, "EC of every group"))
        repaired = sum(n.ec.stats.extents_repaired for n in sim.nodes.values())
        assert repaired >= 1, "no kept copy was corrupt: the test lost its point"
        assert sim.run(read_all(sim, "n2", "img")) == data
        sim.check_disks()  # every kept copy matches its checksums on disk
    finally:
        sim.close()
