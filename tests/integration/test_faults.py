"""Faults injected into real node processes (issue 12), each shown by its effect.

One three-node cluster serves the whole module; every test clears what it injected
(``fabric fault clear`` in a finalizer) and waits for the cluster to be whole again.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fabric.config import load_config
from shell.client import ApiError, FabricClient
from tests.integration.conftest import Cluster, write_config

MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("faults")
    c = Cluster(root / "data", write_config(root / "cluster.toml", 3))
    c.fabric("up", "--config", str(c.config), timeout=120)
    try:
        yield c
    finally:
        c.fabric("down", check=False)


@pytest.fixture
def fab(cluster: Cluster) -> Iterator[Cluster]:
    """The module's cluster, healed after the test: faults cleared, every node UP."""
    yield cluster
    cluster.fabric("fault", "clear", check=False)
    cluster.fabric("up", timeout=120)
    cluster.wait(whole, 30, what="every node and disk UP")


def whole(view: dict[str, Any]) -> bool:
    disks = [d for n in view["nodes"] for d in n["disks"] if isinstance(d, dict)]
    nodes_up = all(n["state"] == "UP" for n in view["nodes"])
    return bool(view["leader"]) and nodes_up and all(d["state"] == "UP" for d in disks)


def client(c: Cluster, only: str | None = None) -> FabricClient:
    nodes = load_config(str(c.dir / "cluster.toml")).nodes
    return FabricClient([n.url for n in nodes if only in (None, n.id)], token=c.token)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s} s")
        time.sleep(0.1)


def health(c: Cluster, node: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with client(c, node) as cl:
            return await cl.health()

    return run(go())  # type: ignore[no-any-return]


def pid_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def events_of(c: Cluster, kind: str) -> list[dict[str, Any]]:
    out = c.fabric("events", "--kind", kind, "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def inject(c: Cluster, *args: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(c.fabric("fault", "inject", *args, "--json").stdout)
    return answer


def test_a_partitioned_leader_loses_leadership_and_clearing_heals(fab: Cluster) -> None:
    old = fab.status()["leader"]
    fault = inject(fab, "net-partition", "--select", "leader", "--duration", "60s")
    assert fault["nodes"] == [old]
    listed = json.loads(fab.fabric("fault", "list", "--json").stdout)
    assert [f["id"] for f in listed] == [fault["id"]]
    others = [n for n in ("n1", "n2", "n3") if n != old]
    until(lambda: health(fab, others[0])["leader"] in others, 20, "a new leader among the rest")
    fab.fabric("fault", "clear", fault["id"])
    fab.wait(lambda v: all(n["state"] == "UP" for n in v["nodes"]), 30, what="healed")
    events = events_of(fab, "fault")
    assert any(fault["id"] in e["message"] for e in events)


async def _put_latency_s(cl: FabricClient, n: int) -> float:
    times = []
    for i in range(n):
        t = time.monotonic()
        await cl.kv_put("lat", i)
        times.append(time.monotonic() - t)
    return statistics.median(times)


def test_delay_raises_a_kv_write_by_about_its_value(fab: Cluster) -> None:
    async def go() -> tuple[float, float]:
        async with client(fab) as cl:
            base = await _put_latency_s(cl, 7)
            await cl.inject_fault("net-delay", {"select": "all"}, {"ms": 100}, 30)
            delayed = await _put_latency_s(cl, 7)
            await cl.clear_faults()
            return base, delayed

    base, delayed = run(go())
    # A commit waits for one leader -> follower -> leader round trip: twice the delay.
    assert delayed - base >= 0.09, (base, delayed)
    assert delayed - base < 1.0, (base, delayed)


def test_loss_makes_calls_retry_and_the_operation_still_succeeds(fab: Cluster) -> None:
    async def go() -> None:
        async with client(fab) as cl:
            await cl.inject_fault("net-loss", {"select": "all"}, {"probability": 0.3}, 30)
            for i in range(10):
                await cl.kv_put("lossy", i)
            assert (await cl.kv_get("lossy"))["value"] == 9

    run(go())
    dropped = sum(sum(health(fab, n)["faults"]["net"].values()) for n in ("n1", "n2", "n3"))
    assert dropped > 0


def _write_vdisk(fab: Cluster, name: str, size: int = 4 * MiB) -> bytes:
    data = os.urandom(size)

    async def go() -> None:
        async with client(fab) as cl:
            if not any(c["name"] == "f" for c in await cl.containers()):
                await cl.create_container("f", rf=2)
            await cl.create_vdisk(name, "f", size)
            await cl.write_vdisk_bytes(name, data)

    run(go())
    return data


def test_slow_disk_shows_in_the_p99_of_reads(fab: Cluster) -> None:
    _write_vdisk(fab, "slow", 2 * MiB)

    async def p99(cl: FabricClient) -> float:
        times = []
        for i in range(20):
            t = time.monotonic()
            await cl.read_vdisk_bytes("slow", (i % 2) * MiB, 4096)
            times.append(time.monotonic() - t)
        return sorted(times)[-1]

    async def go() -> tuple[float, float]:
        async with client(fab) as cl:
            base = await p99(cl)
            await cl.inject_fault("disk-slow", {"select": "all"}, {"ms": 80, "ops": ["read"]}, 30)
            slow = await p99(cl)
            await cl.clear_faults()
            return base, slow

    base, slow = run(go())
    assert slow - base >= 0.07, (base, slow)


def test_corruption_at_rest_is_found_and_repaired(fab: Cluster) -> None:
    data = _write_vdisk(fab, "rot", 2 * MiB)
    # RF2 on three nodes: the first node that holds a copy gets the flipped bit.
    for node in ("n1", "n2", "n3"):
        inject(fab, "disk-corrupt", "--nodes", node, "--param", "mode=at-rest")
        if health(fab, node)["faults"]["bits_flipped"]:
            break
    else:
        raise AssertionError("no node holds an extent group to corrupt")
    fab.fabric("scrub", "--now")

    until(lambda: events_of(fab, "scrub_repaired"), 60, "a scrub_repaired event")

    async def read() -> bytes:
        async with client(fab) as cl:
            return await cl.read_vdisk_bytes("rot")

    assert run(read()) == data


def test_a_full_disk_refuses_writes_with_507(fab: Cluster) -> None:
    async def go() -> int:
        async with client(fab) as cl:
            if not any(c["name"] == "f" for c in await cl.containers()):
                await cl.create_container("f", rf=2)
            await cl.create_vdisk("full", "f", MiB)
            await cl.inject_fault("disk-full", {"select": "all"}, {}, 60)
            try:
                await cl.write_vdisk_bytes("full", os.urandom(MiB))
            except ApiError as exc:
                return exc.status
            return 200

    assert run(go()) == 507


def test_lose_unsynced_then_kill_loses_nothing_acknowledged(fab: Cluster) -> None:
    inject(fab, "disk-lose-unsynced", "--select", "all")
    data = _write_vdisk(fab, "lazy", 3 * MiB)
    pid = fab.status()["nodes"][1]["pid"]
    killed = inject(fab, "node-kill", "--nodes", "n2")
    assert killed["nodes"] == ["n2"]
    until(lambda: not os.path.exists(f"/proc/{pid}") or pid_state(pid) == "Z", 10, "n2 dead")
    fab.fabric("fault", "clear")
    fab.fabric("up", timeout=120)  # brings the killed node back
    fab.wait(lambda v: all(n["state"] == "UP" for n in v["nodes"]), 30, what="n2 back")

    async def read() -> bytes:
        async with client(fab, "n2") as cl:
            return await cl.read_vdisk_bytes("lazy")

    assert run(read()) == data


def test_pause_resume_and_restart(fab: Cluster) -> None:
    pid = next(n["pid"] for n in fab.status()["nodes"] if n["id"] == "n3")
    inject(fab, "node-pause", "--nodes", "n3", "--duration", "1.5s")
    until(lambda: pid_state(pid) == "T", 5, "n3 stopped")
    until(lambda: pid_state(pid) != "T", 10, "n3 resumed by itself")
    inject(fab, "node-pause", "--nodes", "n3")
    until(lambda: pid_state(pid) == "T", 5, "n3 stopped again")
    fab.fabric("fault", "clear")  # resumes it from the cluster directory
    until(lambda: pid_state(pid) != "T", 5, "n3 resumed by fault clear")
    log = Path(fab.dir / "nodes" / "n3" / "node.log")
    before = log.read_text().count("serving on")
    inject(fab, "node-restart", "--nodes", "n3")
    until(lambda: log.read_text().count("serving on") > before, 30, "n3 restarted")
    assert next(n["pid"] for n in fab.status()["nodes"] if n["id"] == "n3") == pid


def test_clock_skew_shows_in_health_and_past_60_s_peers_refuse(fab: Cluster) -> None:
    inject(fab, "clock-skew", "--nodes", "n1", "--param", "offset_s=5")
    assert health(fab, "n1")["faults"]["wall_skew_s"] == 5.0
    fab.fabric("fault", "clear")
    inject(fab, "clock-skew", "--nodes", "n1", "--param", "offset_s=90")
    fab.wait(lambda v: next(n for n in v["nodes"] if n["id"] == "n1")["state"] != "UP", 30)
    fab.fabric("fault", "clear")
    fab.wait(lambda v: all(n["state"] == "UP" for n in v["nodes"]), 30, what="skew healed")


def test_duplicated_messages_change_nothing(fab: Cluster) -> None:
    """Raft's messages delivered twice: every write lands once, in order."""

    async def go() -> None:
        async with client(fab) as cl:
            await cl.inject_fault("net-duplicate", {"select": "all"}, {"probability": 1.0}, 30)
            for i in range(10):
                await cl.kv_put("twice", i)
            assert (await cl.kv_get("twice"))["value"] == 9

    run(go())
    duplicated = sum(
        health(fab, n)["faults"]["net"].get("messages_duplicated", 0) for n in ("n1", "n2", "n3")
    )
    assert duplicated > 0


def test_a_bandwidth_cap_slows_replica_writes_by_its_rate(fab: Cluster) -> None:
    size = 4 * MiB

    async def timed_write(cl: FabricClient, name: str) -> float:
        await cl.create_vdisk(name, "f", size)
        t = time.monotonic()
        await cl.write_vdisk_bytes(name, os.urandom(size))
        return time.monotonic() - t

    async def go() -> tuple[float, float]:
        async with client(fab) as cl:
            if not any(c["name"] == "f" for c in await cl.containers()):
                await cl.create_container("f", rf=2)
            free = await timed_write(cl, "wide")
            cap = {"bytes_per_s": 2_000_000}
            await cl.inject_fault("net-bandwidth", {"select": "all"}, cap, 60)
            capped = await timed_write(cl, "narrow")
            return free, capped

    free, capped = run(go())
    # At RF2 at least one copy of every byte crosses a capped link: 4 MiB at 2 MB/s.
    assert capped >= 0.8 * size / 2_000_000 and capped > 2 * free, (free, capped)


def test_a_reset_refuses_a_nodes_calls_until_it_ends(fab: Cluster) -> None:
    inject(fab, "net-reset", "--nodes", "n2", "--duration", "3s")

    def refused() -> int:
        net = health(fab, "n2")["faults"]["net"]
        return int(net.get("calls_refused", 0) + net.get("messages_dropped", 0))

    until(lambda: refused() > 0, 10, "n2's calls and messages refused")
    until(lambda: not health(fab, "n2")["faults"]["active"], 10, "the reset to end by itself")
    fab.wait(whole, 30, what="every node UP after the reset")


def test_failed_reads_on_one_node_are_served_from_another_copy(fab: Cluster) -> None:
    data = _write_vdisk(fab, "eio", 2 * MiB)
    # A node holding a copy of what was just written (the newest group file): reads
    # through it try its local copy first (nodes/services/reader.py).
    newest = max((fab.dir / "nodes").rglob("*.eg"), key=lambda p: p.stat().st_mtime)
    victim = newest.relative_to(fab.dir / "nodes").parts[0]
    inject(fab, "disk-fail", "--nodes", victim, "--param", "ops=read", "--duration", "60s")

    async def read_back() -> bytes:
        async with client(fab, victim) as cl:  # through the victim: its copy is read first
            return await cl.read_vdisk_bytes("eio", 0, len(data))

    assert run(read_back()) == data
    view = fab.wait(
        lambda v: any(
            d["state"] == "FAILED"
            for n in v["nodes"]
            if n["id"] == victim
            for d in n["disks"]
            if isinstance(d, dict)
        ),
        30,
        what=f"{victim}'s failing disk marked FAILED",
    )
    assert view["leader"]
    # A FAILED disk stays so until its node restarts (nodes/services/disks.py).
    fab.fabric("fault", "clear")
    inject(fab, "node-restart", "--nodes", victim)


def test_a_strobed_clock_jumps_ahead_and_back(fab: Cluster) -> None:
    inject(fab, "clock-strobe", "--nodes", "n3", "--param", "offset_s=3", "--param", "period_s=0.4")
    seen = set()
    deadline = time.monotonic() + 10
    while seen != {0.0, 3.0} and time.monotonic() < deadline:
        seen.add(health(fab, "n3")["faults"]["wall_skew_s"])
    assert seen == {0.0, 3.0}, seen
