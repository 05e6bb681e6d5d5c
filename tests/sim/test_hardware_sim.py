"""Hardware models on virtual time: a disk is one FIFO device with a bandwidth, a link
between racks carries a rebuild no faster than its bandwidth, the traffic counters add
up, and a scenario without ``[hardware]`` runs exactly as the simulator always did."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import xxhash

from fabric.config import ClusterConfig
from fabric.hardware import MB, DiskSpec, HardwareSpec, NetworkSpec
from fabric.scenario import parse_scenario
from fabric.sim.disk import SimDisk
from fabric.sim.loop import VirtualLoop
from fabric.traffic import FAMILIES, family
from nodes.services.storage import SUFFIX, egroup_file
from nodes.simcluster import SimCluster
from tests.sim.conftest import config, started
from tests.sim.test_erasure_sim import _pending, write_cold
from tests.sim.test_rebuild_sim import leader_state, under_replicated, write
from tests.sim.test_scrub_sim import scrub_now

MiB = 1 << 20


def test_a_disk_serves_one_operation_at_a_time_at_its_bandwidth() -> None:
    disk = SimDisk("n1/d0", model=DiskSpec(bandwidth_mb_s=100, sync_latency_ms=5))
    loop = VirtualLoop()
    done: dict[str, float] = {}

    async def writer(name: str, nbytes: int) -> None:
        path = f"{name}.eg"
        await disk.append(path, bytes(nbytes))
        await disk.sync(path)
        done[name] = loop.time()

    try:
        loop.run_until_complete(writer("alone", 64 * MiB))
        # 64 MiB at 100 MB/s is 0.671 s, and the sync's 5 ms after it.
        assert done["alone"] >= 0.64 + 0.005
        assert done["alone"] < 0.7
        start = loop.time()

        async def both() -> None:
            await asyncio.gather(writer("first", 32 * MiB), writer("second", 32 * MiB))

        loop.run_until_complete(both())
        # The second waits for the first: together they take as long as one 64 MiB write.
        assert done["first"] - start >= 32 * MiB / (100 * MB)
        assert done["second"] - start >= 64 * MiB / (100 * MB)
        assert done["second"] > done["first"]
        assert disk.synced_bytes("second.eg") == 32 * MiB
    finally:
        loop.close()


def test_without_a_model_a_disk_never_yields() -> None:
    """The simulator's checkers rely on it: a write completes within the step that
    asked for it."""
    disk = SimDisk("n1/d0")
    coro = disk.append("a.eg", b"x" * 100)
    try:
        coro.send(None)
    except StopIteration as stop:
        assert stop.value == 0
    else:
        raise AssertionError("a disk without a model suspended")


def test_a_64_mib_write_waits_for_the_disks_bandwidth() -> None:
    hw = HardwareSpec(disk=DiskSpec(bandwidth_mb_s=100))
    sim = SimCluster(config(3), seed=5, hardware=hw)
    try:
        sim.run(sim.start_all())
        sim.run(sim.wait_for(lambda: all(n.registered for n in sim.nodes.values()), 30, "up"))
        start = sim.loop.time()
        sim.run(write(sim, "a", random.Random(5).randbytes(64 * MiB)))
        took = sim.loop.time() - start
        # The groups spread over every disk, which write side by side: the write takes at
        # least as long as its busiest disk needs for its share at 100 MB/s.
        disks = [d for held in sim.disks.values() for d in held]
        shares = [
            sum(len(d.contents(f) or b"") for f in d.files() if f.endswith(SUFFIX)) for d in disks
        ]
        assert sum(shares) >= 2 * 64 * MiB, f"seed {sim.seed}: the two copies did not land"
        assert took >= max(shares) / (100 * MB), (
            f"seed {sim.seed}: 64 MiB written in {took:.3f} s, its busiest disk took "
            f"{max(shares)} bytes"
        )
    finally:
        sim.close()


def racked(cross_rack_mb_s: float) -> tuple[ClusterConfig, HardwareSpec]:
    """Three nodes in two racks, replicas never in one rack: every group has its copy in
    r1 on n1, so when n3 is lost its copies are made again on n2 from n1, across."""
    base = config(3)
    racks = {"n1": "r1", "n2": "r2", "n3": "r2"}
    nodes = tuple(replace(n, labels={"rack": racks[n.id]}) for n in base.nodes)
    hw = HardwareSpec(network=NetworkSpec(cross_rack_bandwidth_mb_s=cross_rack_mb_s))
    return replace(base, nodes=nodes, fault_domain="rack"), hw


def test_a_cross_rack_link_carries_a_rebuild_no_faster_than_its_bandwidth() -> None:
    limit_mb_s = 20.0
    cfg, hw = racked(limit_mb_s)
    sim = SimCluster(cfg, seed=4, hardware=hw)
    net = sim.net
    try:
        sim.run(sim.start_all())
        sim.run(sim.wait_for(lambda: all(n.registered for n in sim.nodes.values()), 30, "up"))
        data = random.Random(4).randbytes(16 * MiB)
        sim.run(write(sim, "a", data))
        assert net.bytes_by(family="repair") == 0, f"seed {sim.seed}: repair before a loss"
        assert net.bytes_by(family="write") >= len(data), f"seed {sim.seed}"
        lost = [n for n in leader_state(sim).idx.egroups_on if n != "n1" and n != sim.leader()]
        victim = "n3" if "n3" in lost else "n2"
        pulls: list[float] = []  # when a message of a copy was sent (the leader may copy)
        net.watchers.append(
            lambda _f, _t, msg: pulls.append(sim.loop.time()) if family(msg) == "repair" else None
        )
        sim.crash(victim)
        sim.run(sim.wait_for(lambda: not under_replicated(sim, 2), 300, "full RF2 again"))
        assert pulls, f"seed {sim.seed}: the rebuild sent nothing counted as repair"
        took = sim.loop.time() - pulls[0]
        stats = leader_state(sim).container("c").stats  # type: ignore[union-attr]
        copied = stats.rebuilt_bytes
        assert copied >= 1 * MiB, f"seed {sim.seed}: nothing was rebuilt"
        # The copy crossed racks (repair family), on one directed link of limit_mb_s.
        assert net.bytes_by("across", "repair") >= copied, f"seed {sim.seed}"
        assert net.bytes_by("inside", "repair") < copied / 100, f"seed {sim.seed}"
        assert copied / took <= limit_mb_s * MB, (
            f"seed {sim.seed}: {copied} bytes rebuilt across racks in {took:.3f} s, "
            f"{copied / took / MB:.1f} MB/s over a {limit_mb_s} MB/s link"
        )
        # ... and not by a wide margin: the link, not the protocol, sets the pace.
        assert copied / took >= limit_mb_s * MB / 4, f"seed {sim.seed}: took {took:.3f} s"
        assert_counters_add_up(sim)
    finally:
        sim.close()


def assert_counters_add_up(sim: SimCluster) -> None:
    net = sim.net
    total = net.bytes_sent
    assert sum(net.link_bytes.values()) == total, f"seed {sim.seed}"
    assert net.bytes_by("inside") + net.bytes_by("across") == total, f"seed {sim.seed}"
    assert sum(net.bytes_by(family=f) for f in FAMILIES) == total, f"seed {sim.seed}"
    assert {f for _, f in net.scoped_bytes} <= set(FAMILIES)
    across = sum(n for (a, b), n in net.link_bytes.items() if net.cross_rack(a, b))
    assert across == net.bytes_by("across"), f"seed {sim.seed}"
    assert net.bytes_by(family="metadata") > 0, f"seed {sim.seed}: Raft sent nothing?"
    report = net.traffic()
    assert sum(report["links"].values()) == total
    assert sum(report["inside"].values()) + sum(report["across"].values()) == total


def trace(hardware: HardwareSpec | None, seed: int) -> tuple[object, ...]:
    """A short story (elect, write, lose a node, heal) and what it left: every counter,
    the final virtual time and the leader's state machine."""
    sim = SimCluster(config(4), seed=seed, hardware=hardware)
    try:
        sim.run(sim.start_all())
        sim.run(sim.wait_for(lambda: all(n.registered for n in sim.nodes.values()), 30, "up"))
        sim.run(write(sim, "a", random.Random(seed).randbytes(6 * MiB)))
        victim = next(n for n in sorted(leader_state(sim).idx.egroups_on) if n != sim.leader())
        sim.crash(victim)
        sim.run(sim.wait_for(lambda: not under_replicated(sim, 2), 300, "full RF2 again"))
        sim.run(sim.sleep(1.0))
        net = sim.net
        state = xxhash.xxh3_64_hexdigest(leader_state(sim).snapshot())
        return (
            net.sent,
            net.dropped,
            net.bytes_sent,
            sorted(net.link_bytes.items()),
            sorted(net.scoped_bytes.items()),
            sim.loop.time(),
            sim.leader(),
            state,
        )
    finally:
        sim.close()


def test_a_scenario_without_hardware_runs_as_the_simulator_always_did() -> None:
    spec = parse_scenario("duration_s = 5\n[[workloads]]\nkind = 'kv-cas'\n").hardware
    assert trace(spec, seed=2) == trace(None, seed=2)


def test_a_modelled_run_is_replayed_by_its_seed() -> None:
    hw = HardwareSpec(
        disk=DiskSpec(write_latency_ms=0.1, sync_latency_ms=1, bandwidth_mb_s=200),
        network=NetworkSpec(jitter="exponential", jitter_ms=0.5, bandwidth_mb_s=125),
    )
    first = trace(hw, seed=3)
    assert trace(hw, seed=3) == first
    assert first != trace(None, seed=3)  # the model changed the run


def test_an_erasure_coded_rebuild_counts_as_repair_not_as_writes() -> None:
    """EC rebuild reads strips and appends the lost member with the same messages as
    conversion and client writes; it is counted as repair all the same."""
    sim = started(nodes=5, seed=5)
    net = sim.net
    try:
        sim.run(write_cold(sim, random.Random(5).randbytes(8 * MiB), k=2, m=1))
        sim.run(sim.wait_for(lambda: _pending(sim) == 0, 60, "EC of every group"))
        strip = next(item.value for _, item in leader_state(sim).scan("strip/"))
        victim = next(m.node for m in strip.data if m.node != sim.leader())
        before = {f: net.bytes_by(family=f) for f in FAMILIES}
        sim.crash(victim)

        def rebuilt() -> bool:
            return all(
                victim not in (m.node for m in it.value.members)
                for _, it in leader_state(sim).scan("strip/")
            )

        sim.run(sim.wait_for(rebuilt, 60, f"strips moved off {victim}"))
        grew = {f: net.bytes_by(family=f) - before[f] for f in FAMILIES}
        assert grew["repair"] >= strip.length // strip.k, f"seed {sim.seed}: {grew}"
        assert grew["write"] == 0 and grew["read"] == 0, f"seed {sim.seed}: {grew}"
        assert_counters_add_up(sim)
    finally:
        sim.close()


def test_a_scrub_repair_counts_as_repair_not_as_reads() -> None:
    """The scrubber fetches a good copy with the same read a client makes."""
    sim = started(nodes=4, seed=6)
    net = sim.net
    try:
        sim.run(write(sim, "a", random.Random(6).randbytes(8 * MiB)))
        state = leader_state(sim)
        ext = next(item.value for _, item in state.scan("extent/"))
        eg = state.egroup(ext.egroup)
        assert eg is not None
        node = eg.replicas[0]
        disk = next(d for d in sim.disks[node] if d.contents(egroup_file(eg.egid)) is not None)
        disk.corrupt(egroup_file(eg.egid), ext.offset + 7)
        before = {f: net.bytes_by(family=f) for f in FAMILIES}
        passes = sim.nodes[node].scrubber.stats.passes
        sim.run(scrub_now(sim))
        sim.run(sim.wait_for(lambda: sim.nodes[node].scrubber.stats.passes > passes, 120, "a pass"))
        assert sim.nodes[node].scrubber.stats.repaired == 1, f"seed {sim.seed}"
        grew = {f: net.bytes_by(family=f) - before[f] for f in FAMILIES}
        assert grew["repair"] >= ext.stored_len, f"seed {sim.seed}: {grew}"
        assert grew["read"] == 0, f"seed {sim.seed}: {grew}"
    finally:
        sim.close()
