"""Stories of bytes on a real RF2 cluster: files, sockets, kill -9, a flipped byte on disk."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from fabric.config import load_config
from shell.client import ApiError, FabricClient
from tests.integration.conftest import Cluster

MiB = 1 << 20


def mixed_file(path: Path, size: int = 24 * MiB) -> bytes:
    rng = random.Random(9)
    block = rng.randbytes(MiB)
    parts = [
        rng.randbytes(6 * MiB),
        bytes(4 * MiB),
        block * 4,
        b"compressible line of text\n" * (6 * MiB // 26),
    ]
    data = b"".join(parts)[:size]
    data += bytes(size - len(data))
    path.write_bytes(data)
    return data


def urls(cluster: Cluster) -> list[str]:
    return [n.url for n in load_config(str(cluster.dir / "cluster.toml")).nodes]


def test_rf2_write_kill_a_node_read_back_exact(
    make_cluster: Callable[[int], Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(3)
    cluster.fabric("up", "--config", str(cluster.config))
    src = tmp_path / "disk.img"
    data = mixed_file(src)
    cluster.fabric("container", "create", "gold", "--rf", "2", "--dedup", "--compression", "zstd")
    cluster.fabric("vdisk", "create", "vm1", "--container", "gold", "--size", "1G")
    cluster.fabric("vdisk", "write", "vm1", str(src))

    view = cluster.status()
    gold = next(c for c in view["containers"] if c["name"] == "gold")
    nonzero = sum(1 for i in range(0, len(data), MiB) if any(data[i : i + MiB]))
    assert gold["logical_bytes"] == nonzero * MiB  # all-zero extents are holes
    assert gold["dedup_ratio"] > 1.2 and gold["compression_ratio"] > 1.2
    assert gold["resiliency"] == 1

    victim = next(n for n in view["nodes"] if n["id"] != view["leader"])
    os.kill(victim["pid"], signal.SIGKILL)
    out = tmp_path / "back.img"
    cluster.fabric("vdisk", "read", "vm1", "-o", str(out), "--length", str(len(data)))
    assert out.read_bytes() == data

    # Writes that need two fault domains still succeed with two nodes left.
    cluster.wait(
        lambda v: any(n["id"] == victim["id"] and n["state"] == "DOWN" for n in v["nodes"]),
        what="the killed node marked DOWN",
    )
    (tmp_path / "more.bin").write_bytes(b"written after the failure")
    cluster.fabric("vdisk", "write", "vm1", str(tmp_path / "more.bin"), "--offset", "512M")
    got = cluster.fabric(
        "vdisk", "read", "vm1", "-o", "-", "--offset", "512M", "--length", "25"
    ).stdout
    assert got == "written after the failure"


def test_flipped_byte_on_disk_is_detected_and_repaired(
    make_cluster: Callable[[int], Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(3)
    cluster.fabric("up", "--config", str(cluster.config))
    data = random.Random(4).randbytes(2 * MiB)
    (tmp_path / "r.bin").write_bytes(data)
    cluster.fabric("container", "create", "c", "--rf", "2")
    cluster.fabric("vdisk", "create", "v", "--container", "c", "--size", "2M")
    cluster.fabric("vdisk", "write", "v", str(tmp_path / "r.bin"))

    replicas = sorted(cluster.dir.glob("nodes/*/disk*/*.eg"))
    assert len(replicas) == 2
    victim = replicas[0]
    good = victim.read_bytes()
    bad = bytearray(good)
    bad[12345] ^= 0xFF
    victim.write_bytes(bytes(bad))

    # Read through the node that holds the bad copy (it reads its local copy first).
    holder = victim.parts[-3]
    port = next(
        n.port for n in load_config(str(cluster.dir / "cluster.toml")).nodes if n.id == holder
    )

    async def read_and_wait_for_repair() -> bytes:
        async with FabricClient([f"http://127.0.0.1:{port}"], token=cluster.token) as client:
            got = await client.read_vdisk_bytes("v")
            for _ in range(100):  # the repair is written in the background; bounded poll
                if victim.read_bytes() == good:
                    break
                await asyncio.sleep(0.05)
            return got

    assert asyncio.run(read_and_wait_for_repair()) == data
    assert victim.read_bytes() == good


def test_http_bad_input_gets_clear_4xx_and_changes_nothing(
    make_cluster: Callable[[int], Cluster],
) -> None:
    cluster = make_cluster(3)
    cluster.fabric("up", "--config", str(cluster.config))

    async def go() -> None:
        async with FabricClient(urls(cluster), token=cluster.token) as client:
            await client.create_container("c", rf=2)
            await client.create_vdisk("v", "c", MiB)
            await client.write_vdisk_bytes("v", b"keep")
            cases = [
                (client.write_vdisk_bytes("v", b"12345", offset=MiB - 2), 400, "past the end"),
                (client.write_vdisk_bytes("v", b"x", offset=-1), 400, "offset must be an integer"),
                (client.write_vdisk_bytes("nope", b"x"), 404, "no vdisk 'nope'"),
                (client.create_vdisk("w", "nope", MiB), 404, "no container 'nope'"),
                (client.create_container("big", rf=5), 400, "rf must be an integer in 1..3"),
                (client.create_container("c", rf=2), 409, "already exists"),
                (
                    client.request("POST", "/api/v1/vdisks", data=b"{not json"),
                    400,
                    "not valid JSON",
                ),
                (client.request("GET", "/api/v1/nothing"), 404, ""),
            ]
            for call, status, fragment in cases:
                with pytest.raises(ApiError) as err:
                    await call
                assert err.value.status == status, err.value
                assert fragment in err.value.message
            assert await client.read_vdisk_bytes("v", 0, 4) == b"keep"
            c = await client.container("c")
            assert c["logical_bytes"] == MiB  # one extent, still the only one

    asyncio.run(go())
    # The error format is the SPEC's: {"error": {"code", "message"}}.
    out = cluster.fabric("vdisk", "show", "nope", check=False)
    assert out.returncode == 1 and "no vdisk 'nope' (not_found)" in out.stderr
    assert json.loads(cluster.fabric("container", "list", "--json").stdout)[0]["name"] == "c"
