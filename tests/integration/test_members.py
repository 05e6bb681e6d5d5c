"""Nodes join and leave a running cluster of real processes: ``fabric node add --voter``
(data moves onto it), ``fabric node remove`` (drained, then retired); ``fabric status``
and the directory's ``cluster.toml`` agree after each."""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fabric.config import load_config
from tests.integration.conftest import Cluster

MiB = 1 << 20


def agree(cluster: Cluster, view: dict[str, Any]) -> None:
    cfg = load_config(str(cluster.dir / "cluster.toml"))
    assert {n["id"] for n in view["nodes"]} == {n.id for n in cfg.nodes}, view["nodes"]
    voters = {n["id"] for n in view["nodes"] if n["role"] in ("voter", "leader")}
    assert voters == set(cfg.voters), (voters, cfg.voters)


def held(cluster: Cluster, node: str) -> int:
    """Groups ``node`` holds, read from the drain endpoint (GET changes nothing)."""
    url = load_config(str(cluster.dir / "cluster.toml")).nodes[0].url
    request = urllib.request.Request(
        f"{url}/api/v1/nodes/{node}/drain", headers={"Authorization": f"Bearer {cluster.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(json.load(resp)["groups"])


def test_a_node_joins_as_a_voter_gets_data_and_another_leaves(
    make_cluster: Callable[[int], Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(3)
    cluster.fabric("up", "--config", str(cluster.config))
    data = random.Random(3).randbytes(96 * MiB)
    (tmp_path / "in.bin").write_bytes(data)
    cluster.fabric("container", "create", "c", "--rf", "2")
    cluster.fabric("vdisk", "create", "v", "--container", "c", "--size", "96M")
    cluster.fabric("vdisk", "write", "v", str(tmp_path / "in.bin"))

    added = cluster.fabric("node", "add", "--voter", timeout=180)
    assert "promoted to voter" in added.stdout, added.stdout
    view = cluster.wait(
        lambda v: any(n["id"] == "n4" and n["state"] == "UP" for n in v["nodes"]), 30, "n4 UP"
    )
    agree(cluster, view)
    assert next(n for n in view["nodes"] if n["id"] == "n4")["role"] in ("voter", "leader")
    cluster.wait(lambda v: held(cluster, "n4") > 0, 60, "data moved onto n4")

    removed = cluster.fabric("node", "remove", "n1", timeout=180)
    assert "removed from the cluster" in removed.stdout, removed.stdout
    view = cluster.wait(lambda v: v["leader"] is not None and len(v["nodes"]) == 3, 30, "n1 gone")
    agree(cluster, view)
    cluster.wait(
        lambda v: all(c["reduced_resiliency_bytes"] == 0 for c in v["containers"]),
        60,
        "full resiliency without n1",
    )
    out = tmp_path / "out.bin"
    cluster.fabric("vdisk", "read", "v", "-o", str(out))
    assert out.read_bytes()[: len(data)] == data
    kinds = [
        json.loads(line)["kind"] for line in cluster.fabric("events", "--json").stdout.splitlines()
    ]
    assert "membership" in kinds and "rebalance_started" in kinds and "node_drain" in kinds
