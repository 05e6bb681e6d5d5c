"""A disk that vanishes under a running node: marked FAILED, its copies made again."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import Cluster

MiB = 1 << 20


def disk_of(view: dict[str, Any], node: str, disk: str) -> dict[str, Any]:
    entry = next(n for n in view["nodes"] if n["id"] == node)
    return next(d for d in entry["disks"] if isinstance(d, dict) and d["name"] == disk)


def test_a_vanished_disk_is_failed_and_its_data_rebuilt(
    make_cluster: Callable[[int], Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(4)
    cluster.fabric("up", "--config", str(cluster.config))
    data = random.Random(4).randbytes(40 * MiB)
    (tmp_path / "in.bin").write_bytes(data)
    cluster.fabric("container", "create", "c", "--rf", "2")
    cluster.fabric("vdisk", "create", "v", "--container", "c", "--size", "40M")
    cluster.fabric("vdisk", "write", "v", str(tmp_path / "in.bin"))
    nodes = cluster.dir / "nodes"
    victim, disk = next(
        (n.name, "disk1") for n in sorted(nodes.iterdir()) if any((n / "disk1").glob("*.eg"))
    )
    # The directory goes away and a file takes its place: every open there now fails,
    # for root too (a chmod would not stop root).
    shutil.rmtree(nodes / victim / disk)
    (nodes / victim / disk).write_text("not a directory\n")

    view = cluster.wait(
        lambda v: disk_of(v, victim, disk)["state"] == "FAILED", 30, f"{victim}/{disk} FAILED"
    )
    assert next(n for n in view["nodes"] if n["id"] == victim)["state"] == "UP"
    cluster.wait(
        lambda v: all(
            c["reduced_resiliency_bytes"] == 0 and c["resiliency"] == 1 for c in v["containers"]
        ),
        90,
        "every copy made again",
    )
    out = tmp_path / "out.bin"
    cluster.fabric("vdisk", "read", "v", "-o", str(out))
    assert out.read_bytes()[: len(data)] == data
    events = cluster.fabric("events", "--json", "--kind", "disk_state,copies_lost").stdout
    assert "FAILED" in events and "copies_lost" in events, events
