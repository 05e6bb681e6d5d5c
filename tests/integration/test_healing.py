"""Healing stories on real processes: a node dies for good, and the cluster makes the
copies it held again elsewhere, so a container is back to full resiliency without it."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fabric.config import load_config
from shell.client import FabricClient
from tests.integration.conftest import Cluster

MiB = 1 << 20
REBUILD_DEADLINE_S = 30.0
"""A few MiB copy in well under a second; the rest is room for a loaded machine."""


def urls_but(cluster: Cluster, node_id: str) -> list[str]:
    return [n.url for n in load_config(str(cluster.dir / "cluster.toml")).nodes if n.id != node_id]


def egroup_files(cluster: Cluster, node_id: str) -> list[Path]:
    return sorted(cluster.dir.glob(f"nodes/{node_id}/disk*/*.eg"))


def bytes_held(cluster: Cluster, node_id: str) -> int:
    return sum(p.stat().st_size for p in egroup_files(cluster, node_id))


def node(view: dict[str, Any], node_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(n for n in view["nodes"] if n["id"] == node_id)
    return found


def wait_events(cluster: Cluster, *kinds: str) -> dict[str, dict[str, Any]]:
    """kind -> the first event of that kind ``fabric events --json`` lists, once every
    one of ``kinds`` is there (a deadline, not a sleep)."""
    deadline = time.monotonic() + REBUILD_DEADLINE_S
    while True:
        out = cluster.fabric("events", "--json", "--kind", ",".join(kinds)).stdout
        found: dict[str, dict[str, Any]] = {}
        for line in out.splitlines():
            event = json.loads(line)
            found.setdefault(event["kind"], event)
        if set(found) == set(kinds):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"events {kinds} not all listed: {out}")
        time.sleep(0.2)


async def wait_rebuilt(
    urls: list[str], token: str, victim: str, container: str, rf: int
) -> dict[str, Any]:
    """Wait until the cluster's metadata has ``victim`` DOWN, then poll
    ``GET /api/v1/rebuild`` until ``container`` has no byte at reduced resiliency and
    its resiliency is rf - 1 again; the last answer (a deadline, not a sleep).

    ``fabric status`` is no judge here: it shows a local node whose process is gone
    as DOWN at once, before the leader has noticed anything."""
    deadline = time.monotonic() + REBUILD_DEADLINE_S
    async with FabricClient(urls, token=token) as client:
        while node(await client.cluster(), victim)["state"] != "DOWN":
            assert time.monotonic() < deadline, f"{victim} not marked DOWN"
            await asyncio.sleep(0.2)
        while True:
            answer = await client.rebuild()
            c = next(c for c in answer["containers"] if c["name"] == container)
            if c["reduced_resiliency_bytes"] == 0 and c["resiliency"] == rf - 1:
                return answer
            assert time.monotonic() < deadline, f"not rebuilt in {REBUILD_DEADLINE_S} s: {answer}"
            await asyncio.sleep(0.2)


async def pulled_bytes(urls: list[str], token: str) -> dict[tuple[str, str], int]:
    """``fabric_rebuild_pulled_bytes_total`` of every node, by (target, source)."""
    pattern = re.compile(
        r'^fabric_rebuild_pulled_bytes_total\{node="([^"]+)",source="([^"]+)"\} (\S+)$', re.M
    )
    out: dict[tuple[str, str], int] = {}
    for url in urls:
        async with FabricClient([url], token=token) as client:
            text = await client.metrics_text()
        for target, source, value in pattern.findall(text):
            out[(target, source)] = int(float(value))
    return out


async def api_view(urls: list[str], token: str) -> dict[str, Any]:
    async with FabricClient(urls, token=token) as client:
        return await client.cluster()


def test_a_killed_node_is_rebuilt_elsewhere_and_every_byte_reads_back(
    make_cluster: Callable[[int], Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(5)
    cluster.fabric("up", "--config", str(cluster.config))
    cluster.fabric("container", "create", "gold", "--rf", "2")
    cluster.fabric("vdisk", "create", "vm1", "--container", "gold", "--size", "64M")
    data = random.Random(10).randbytes(12 * MiB)  # a full 8 MiB group and an open one
    (tmp_path / "disk.img").write_bytes(data)
    cluster.fabric("vdisk", "write", "vm1", str(tmp_path / "disk.img"))
    out = cluster.fabric("rebuild", "--delay", "0")
    assert "after 0 s DOWN" in out.stdout, out.stdout

    # The victim holds copies and is not the leader: a failover is another story.
    view = cluster.status()
    holders = [n["id"] for n in view["nodes"] if n["id"] != view["leader"]]
    victim = max(holders, key=lambda n: bytes_held(cluster, n))
    lost = {p.name: p.read_bytes() for p in egroup_files(cluster, victim)}
    assert lost, "the story needs a node that holds copies"
    os.kill(node(view, victim)["pid"], signal.SIGKILL)

    answer = asyncio.run(
        wait_rebuilt(urls_but(cluster, victim), cluster.token, victim, "gold", rf=2)
    )
    gold = next(c for c in answer["containers"] if c["name"] == "gold")
    assert gold["rebuilt_bytes"] == sum(map(len, lost.values())), gold
    # Every group the victim held has two good copies again, on the other nodes.
    survivors = [n["id"] for n in view["nodes"] if n["id"] != victim]
    copies = [p for n in survivors for p in egroup_files(cluster, n) if p.name in lost]
    for name, content in lost.items():
        assert [p.read_bytes() == content for p in copies if p.name == name] == [True, True]
    # The targets say where they read the copies from: survivors only, every byte.
    pulled = asyncio.run(pulled_bytes(urls_but(cluster, victim), cluster.token))
    assert pulled and all(source in survivors for _, source in pulled), pulled
    assert sum(pulled.values()) == gold["rebuilt_bytes"], pulled

    # Whole again without the victim: it is still dead, and DOWN to the cluster.
    assert not node(cluster.status(), victim).get("pid")
    cluster_view = asyncio.run(api_view(urls_but(cluster, victim), cluster.token))
    assert node(cluster_view, victim)["state"] == "DOWN"
    back = tmp_path / "back.img"
    cluster.fabric("vdisk", "read", "vm1", "-o", str(back), "--length", str(len(data)))
    assert back.read_bytes() == data

    # The event log tells the story; the finish is recorded on the planner's next pass.
    found = wait_events(cluster, "rebuild_started", "rebuild_finished")
    started, finished = found["rebuild_started"], found["rebuild_finished"]
    assert victim in started["message"], started
    assert started["at_wall"] <= finished["at_wall"], found
