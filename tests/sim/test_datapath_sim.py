"""The data path on a simulated 5-node cluster: real node code, virtual time and disks."""

from __future__ import annotations

import random
from typing import Any

import pytest

from fabric.errors import BadRequest, Conflict, NotFound, Unavailable
from fabric.extents.policy import ContainerPolicy
from fabric.metadata import keys
from fabric.metadata.records import EgroupRecord
from nodes.simcluster import SimCluster
from tests.sim.conftest import chunks, started

MiB = 1 << 20


async def read_all(
    sim: SimCluster, via: str, name: str, offset: int = 0, length: int | None = None
) -> bytes:
    _, _, stream = await sim.nodes[via].reader.read(name, offset, length)
    return b"".join([c async for c in stream])


async def container_view(sim: SimCluster, name: str) -> dict[str, Any]:
    view = await sim.nodes["n1"].cluster_view()
    return next(c for c in view["containers"] if c["name"] == name)


def test_same_64mib_twice_with_dedup_costs_one_copy_times_rf(sim: SimCluster) -> None:
    data = random.Random(1).randbytes(64 * MiB)

    async def go() -> dict[str, Any]:
        g = sim.nodes["n2"]
        await g.catalog.create_container("gold", ContainerPolicy(rf=2, dedup=True))
        for name in ("a", "b"):
            await g.catalog.create_vdisk(name, "gold", 64 * MiB)
            await g.writer.write(name, 0, len(data), chunks(data))
        assert await read_all(sim, "n3", "b") == data
        return await container_view(sim, "gold")

    c = sim.run(go())
    assert c["logical_bytes"] == 128 * MiB
    assert c["unique_bytes"] == 64 * MiB
    # One copy per replica, plus at most 1% (nothing but the extents is stored).
    assert 128 * MiB <= c["physical_bytes"] <= 128 * MiB * 1.01
    assert c["dedup_ratio"] == 2.0


def test_compressible_data_shows_its_zstd_ratio_and_zeros_cost_nothing(sim: SimCluster) -> None:
    text = b"".join(b"line %08d of a very repetitive log file\n" % i for i in range(400_000))
    text = text[: 16 * MiB]

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        g = sim.nodes["n1"]
        await g.catalog.create_container("logs", ContainerPolicy(rf=2, compression="zstd"))
        await g.catalog.create_vdisk("l", "logs", 64 * MiB)
        await g.writer.write("l", 0, len(text), chunks(text))
        await g.catalog.create_container("thin", ContainerPolicy(rf=3))
        await g.catalog.create_vdisk("z", "thin", 64 * MiB)
        await g.writer.write("z", 0, 32 * MiB, chunks(bytes(32 * MiB)))
        assert await read_all(sim, "n4", "l", 0, len(text)) == text
        assert await read_all(sim, "n4", "z") == bytes(64 * MiB)
        return await container_view(sim, "logs"), await container_view(sim, "thin")

    logs, thin = sim.run(go())
    assert logs["compression_ratio"] > 4
    assert logs["physical_bytes"] == logs["stored_bytes"] * 2
    assert thin["logical_bytes"] == 0 and thin["physical_bytes"] == 0


def test_corrupt_replica_is_read_around_and_rewritten(sim: SimCluster) -> None:
    data = random.Random(2).randbytes(3 * MiB)

    async def go() -> None:
        g = sim.nodes["n1"]
        await g.catalog.create_container("c", ContainerPolicy(rf=2))
        await g.catalog.create_vdisk("v", "c", 3 * MiB)
        await g.writer.write("v", 0, len(data), chunks(data))

    sim.run(go())
    # Flip a byte of the writer's own (local, read-first) replica on its disk.
    disk, path = next((d, p) for d in sim.disks["n1"] for p in d.files() if p.endswith(".eg"))
    good = disk.contents(path)
    disk.corrupt(path, 1000)
    assert sim.run(read_all(sim, "n1", "v")) == data
    # The repair runs in the background.
    sim.run(sim.wait_for(lambda: disk.contents(path) == good, 10, "the bad copy rewritten"))
    assert sim.nodes["n1"].reader.stats.repairs >= 1


def test_rf2_survives_a_crashed_node_for_reads_and_new_writes() -> None:
    sim = started(nodes=3, seed=4)
    data = random.Random(3).randbytes(10 * MiB + 123)
    try:

        async def write() -> None:
            g = sim.nodes["n2"]
            await g.catalog.create_container(
                "c", ContainerPolicy(rf=2, dedup=True, compression="zstd")
            )
            await g.catalog.create_vdisk("v", "c", 20 * MiB)
            await g.writer.write("v", 0, len(data), chunks(data))

        sim.run(write())
        sim.crash("n2")

        async def after() -> None:
            assert await read_all(sim, "n3", "v", 0, len(data)) == data
            # Once n2 is DOWN, new writes place their two replicas on n1 and n3.
            await sim.wait_for(
                lambda: sim.nodes["n1"].metadata.state.nodes()["n2"].state == "DOWN",
                20,
                "n2 marked DOWN",
            )
            await sim.nodes["n1"].writer.write("v", 11 * MiB, 5, chunks(b"after"))
            assert await read_all(sim, "n3", "v", 11 * MiB, 5) == b"after"
            c = await container_view(sim, "c")
            assert c["resiliency"] == 0  # the first extents have one live copy left

        sim.run(after())
    finally:
        sim.close()


def test_write_fails_clearly_when_rf_domains_are_not_healthy() -> None:
    sim = started(nodes=3, seed=5)
    try:

        async def go() -> None:
            g = sim.nodes["n1"]
            await g.catalog.create_container("c", ContainerPolicy(rf=3))
            await g.catalog.create_vdisk("v", "c", MiB)
            sim.crash("n3")
            await sim.wait_for(
                lambda: sim.nodes["n1"].metadata.state.nodes()["n3"].state == "DOWN",
                20,
                "n3 marked DOWN",
            )
            with pytest.raises(Unavailable, match="needs 3 fault domains, only 2 healthy"):
                await g.writer.write("v", 0, 4096, chunks(b"x" * 4096))
            assert (await container_view(sim, "c"))["physical_bytes"] == 0

        sim.run(go())
    finally:
        sim.close()


def test_partial_and_concurrent_writes_to_one_extent_are_all_kept(sim: SimCluster) -> None:
    async def go() -> bytes:
        await sim.nodes["n1"].catalog.create_container("c", ContainerPolicy(rf=2))
        await sim.nodes["n1"].catalog.create_vdisk("v", "c", 2 * MiB)
        import asyncio

        writes = [
            sim.nodes[f"n{1 + i % 5}"].writer.write(
                "v", 1000 + i * 10, 10, chunks(bytes([65 + i]) * 10)
            )
            for i in range(20)
        ]
        await asyncio.gather(*writes)
        return await read_all(sim, "n2", "v", 1000, 200)

    got = sim.run(go())
    assert got == b"".join(bytes([65 + i]) * 10 for i in range(20))


def test_overwrite_and_delete_release_every_reference(sim: SimCluster) -> None:
    rng = random.Random(6)
    a, b = rng.randbytes(4 * MiB), rng.randbytes(4 * MiB)

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        g = sim.nodes["n3"]
        await g.catalog.create_container("c", ContainerPolicy(rf=2, dedup=True))
        await g.catalog.create_vdisk("v", "c", 4 * MiB)
        await g.catalog.create_vdisk("w", "c", 4 * MiB)
        await g.writer.write("v", 0, len(a), chunks(a))
        await g.writer.write("w", 0, len(a), chunks(a))  # shares every extent with v
        await g.writer.write("v", 0, len(b), chunks(b))  # v moves on; w still holds a
        mid = await container_view(sim, "c")
        assert await read_all(sim, "n1", "w") == a
        await g.catalog.delete_vdisk("v")
        await g.catalog.delete_vdisk("w")
        return mid, await container_view(sim, "c")

    mid, end = sim.run(go())
    assert mid["unique_bytes"] == 8 * MiB and mid["logical_bytes"] == 8 * MiB
    assert end["unique_bytes"] == 0 and end["logical_bytes"] == 0 and end["vdisks"] == 0


def test_bad_requests_are_refused_and_change_nothing(sim: SimCluster) -> None:
    async def go() -> None:
        g = sim.nodes["n1"]
        await g.catalog.create_container("c", ContainerPolicy(rf=2))
        await g.catalog.create_vdisk("v", "c", MiB)
        await g.writer.write("v", 0, 4, chunks(b"keep"))
        before = await container_view(sim, "c")
        with pytest.raises(BadRequest, match="past the end"):
            await g.writer.write("v", MiB - 2, 4, chunks(b"oops"))
        with pytest.raises(BadRequest, match="must not be negative"):
            await g.writer.write("v", -1, 4, chunks(b"oops"))
        with pytest.raises(NotFound, match="no vdisk 'nope'"):
            await g.writer.write("nope", 0, 4, chunks(b"oops"))
        with pytest.raises(NotFound, match="no container 'nope'"):
            await g.catalog.create_vdisk("x", "nope", MiB)
        with pytest.raises(Conflict, match="already exists"):
            await g.catalog.create_vdisk("v", "c", MiB)
        with pytest.raises(BadRequest, match="rf 3 needs 3 fault domains"):
            await _rf_too_wide(sim)
        assert await container_view(sim, "c") == before
        assert await read_all(sim, "n2", "v", 0, 4) == b"keep"

    sim.run(go())


async def _rf_too_wide(sim: SimCluster) -> None:
    """A two-rack config cannot hold three rack-disjoint replicas."""
    from dataclasses import replace

    catalog = sim.nodes["n1"].catalog
    nodes = tuple(
        replace(n, labels={"rack": "r1" if i < 3 else "r2"})
        for i, n in enumerate(catalog.config.nodes)
    )
    catalog.config = replace(catalog.config, nodes=nodes, fault_domain="rack")
    catalog.membership.config = catalog.config
    await catalog.create_container("wide", ContainerPolicy(rf=3))


def test_restarted_cluster_serves_its_containers_at_once() -> None:
    sim = started(nodes=3, seed=8)
    try:
        sim.run(sim.nodes["n1"].catalog.create_container("c", ContainerPolicy(rf=2)))
        for node_id in ("n1", "n2", "n3"):
            sim.crash(node_id)
        for node_id in ("n1", "n2", "n3"):
            sim.run(sim.restart(node_id))
        sim.run(sim.wait_for(lambda: sim.leader() is not None, 20, "a leader"))

        async def view() -> list[str]:
            v = await sim.nodes["n2"].cluster_view()
            return [c["name"] for c in v["containers"]]

        assert sim.run(view()) == ["c"]
    finally:
        sim.close()


def _disk_bytes(sim: SimCluster) -> int:
    return sum(
        len(d.contents(p) or b"")
        for disks in sim.disks.values()
        for d in disks
        for p in d.files()
        if p.endswith(".eg")
    )


def _groups(sim: SimCluster) -> list[EgroupRecord] | None:
    """The leader's extent group records (None while there is no leader)."""
    leader = sim.leader()
    if leader is None:
        return None
    return [item.value for _, item in sim.nodes[leader].metadata.state.scan(keys.EGROUP)]


def _all_sealed_and_compacted(sim: SimCluster) -> bool:
    groups = _groups(sim)
    return bool(groups) and all(eg.sealed and not eg.dead_bytes for eg in groups or ())


def _no_groups(sim: SimCluster) -> bool:
    return _groups(sim) == []


def test_dead_space_is_compacted_and_deleted_data_is_collected(sim: SimCluster) -> None:
    rng = random.Random(10)
    first, second = rng.randbytes(8 * MiB), rng.randbytes(6 * MiB)

    async def go() -> tuple[dict[str, Any], dict[str, Any], int, int]:
        g = sim.nodes["n1"]
        await g.catalog.create_container("c", ContainerPolicy(rf=2))
        await g.catalog.create_vdisk("v", "c", 8 * MiB)
        await g.writer.write("v", 0, len(first), chunks(first))
        # The writer goes quiet: its group is sealed.
        await sim.wait_for(lambda: _all_sealed_and_compacted(sim), 30, "the first group sealed")
        await g.writer.write("v", 0, len(second), chunks(second))  # 6 of 8 extents now dead
        # Seal the second group, compact the first one into a third, collect the first.
        await sim.wait_for(lambda: _all_sealed_and_compacted(sim), 60, "the dead space compacted")
        compacted = await container_view(sim, "c")
        on_disk = _disk_bytes(sim)
        assert await read_all(sim, "n4", "v") == second + first[6 * MiB :]
        await g.catalog.delete_vdisk("v")
        await sim.wait_for(lambda: _no_groups(sim), 60, "every group collected")
        return compacted, await container_view(sim, "c"), on_disk, _disk_bytes(sim)

    compacted, deleted, on_disk, after = sim.run(go())
    assert compacted["physical_bytes"] == compacted["stored_bytes"] * 2 == 16 * MiB
    assert on_disk == 16 * MiB
    assert deleted["physical_bytes"] == 0 and after == 0
    scanners = [n.scanner.stats for n in sim.nodes.values()]
    assert sum(s.compacted for s in scanners) >= 1 and sum(s.dropped for s in scanners) >= 2


def test_a_long_write_claims_its_groups_a_few_at_a_time_and_never_uses_a_stale_claim(
    sim: SimCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fabric import limits
    from nodes.services.replicas import ReplicaClient

    claims: list[int] = []
    real = ReplicaClient.claim_files

    async def counted(self: ReplicaClient, *intents: Any) -> None:
        claims.append(len(intents))
        await real(self, *intents)

    monkeypatch.setattr(ReplicaClient, "claim_files", counted)
    # Five groups' worth: two claim commits, and spare claims left over.
    data = random.Random(4).randbytes(5 * limits.EGROUP_MAX_BYTES)
    groups = 5

    async def go() -> None:
        g = sim.nodes["n1"]
        await g.catalog.create_container("c", ContainerPolicy(rf=2))
        await g.catalog.create_vdisk("v", "c", 96 * MiB)
        await g.writer.write("v", 0, len(data), chunks(data))
        assert len(claims) == -(-groups // limits.CLAIM_AHEAD_GROUPS)  # commits, rounded up
        assert sum(claims) >= groups
        # Spare claims older than a quarter of the claim timeout are not trusted: the
        # next write claims afresh, and its data is readable.
        await sim.sleep(limits.CLAIM_TIMEOUT_S / 4 + 1)
        before = len(claims)
        await g.writer.write("v", len(data), 8 * MiB, chunks(data[: 8 * MiB]))
        assert len(claims) == before + 1
        end = len(data) + 8 * MiB
        assert await read_all(sim, "n3", "v", 0, end) == data + data[: 8 * MiB]

    sim.run(go())


def test_dedup_ids_are_keyed_by_the_cluster_and_old_unkeyed_ids_still_read() -> None:
    """Nobody without the cluster's secret can compute the id of a block: two clusters
    name the same bytes differently. An extent stored under an unkeyed id (an older
    release) keeps its id and its bytes, and is not confused with the keyed one."""
    data = random.Random(7).randbytes(MiB)

    def ids_after_writing(seed: int, keyed: bool) -> tuple[set[str], bytes]:
        sim = started(3, seed)
        try:
            if not keyed:
                sim.nodes["n1"].writer.dedup_key = None  # as release 0.3 wrote
            g = sim.nodes["n1"]

            async def go() -> bytes:
                await g.catalog.create_container("d", ContainerPolicy(rf=2, dedup=True))
                await g.catalog.create_vdisk("v", "d", MiB)
                await g.writer.write("v", 0, len(data), chunks(data))
                return await read_all(sim, "n2", "v")

            back = sim.run(go())
            state = sim.nodes["n1"].metadata.state
            return {k.rsplit("/", 1)[1] for k, _ in state.scan(keys.EXTENT)}, back
        finally:
            sim.close()

    (one,), back_one = ids_after_writing(1, keyed=True)
    (two,), back_two = ids_after_writing(2, keyed=True)
    (old,), back_old = ids_after_writing(3, keyed=False)
    assert one.startswith("k") and two.startswith("k") and one != two, (one, two)
    assert old.startswith("h") and old[1:] != one[1:]
    assert back_one == back_two == back_old == data
