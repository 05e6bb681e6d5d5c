"""Erasure coding on real processes: 4+2 on seven nodes, then kill -9 two of them."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Cluster

MiB = 1 << 20


def test_4_2_on_seven_nodes_survives_two_kills(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    # Five metadata voters, so that the metadata survives any two nodes too.
    cluster = make_cluster(7, voters=5)
    cluster.fabric("up", "--config", str(cluster.config))
    data = random.Random(11).randbytes(32 * MiB)
    (tmp_path / "img").write_bytes(data)
    cluster.fabric(
        "container",
        "create",
        "cold",
        "--rf",
        "2",
        "--ec",
        "4+2",
        "--ec-delay",
        "0s",
        "--compression",
        "zstd",
        "--dedup",
    )
    cluster.fabric("vdisk", "create", "img1", "--container", "cold", "--size", "32M")
    cluster.fabric("vdisk", "write", "img1", str(tmp_path / "img"))

    def converted(v: dict) -> bool:  # type: ignore[type-arg]
        c = v["containers"][0]
        return c["ec_strips"] >= 1 and c["ec_pending_groups"] == 0

    view = cluster.wait(converted, timeout_s=60, what="every extent group erasure coded")
    c = view["containers"][0]
    assert view["erasure_backend"] in ("isa_l_rs_vand", "liberasurecode_rs_vand")
    assert abs(c["physical_bytes"] - c["stored_bytes"] * 1.5) <= 0.05 * c["stored_bytes"] * 1.5
    assert "4+2" in cluster.fabric("status").stdout

    victims = random.Random(5).sample(view["nodes"], 2)  # any two, the leader included
    for n in victims:
        os.kill(n["pid"], signal.SIGKILL)
    started = time.monotonic()
    out = tmp_path / "back"
    cluster.fabric("vdisk", "read", "img1", "-o", str(out))
    assert out.read_bytes() == data, f"read back differs after killing {victims}"
    assert time.monotonic() - started < 60
