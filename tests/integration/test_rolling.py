"""``fabric restart --rolling`` while a client keeps writing: no write is lost or refused
for good, and the cluster is at full resiliency after every step."""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fabric.config import load_config
from shell.client import ApiError, FabricClient, Unreachable
from tests.integration.conftest import Cluster

MiB = 1 << 20
RETRIES = 40


async def write_until(
    urls: list[str], token: str, stop: threading.Event
) -> tuple[dict[int, bytes], list[str]]:
    """Write 1 MiB chunks one after another until ``stop``; a chunk is retried (same bytes,
    same offset) as a client of a real system would. (chunks written, failures)."""
    rng = random.Random(5)
    written: dict[int, bytes] = {}
    failures: list[str] = []
    async with FabricClient(urls, timeout_s=30, token=token) as client:
        await client.create_container("roll", rf=2)
        await client.create_vdisk("v", "roll", 1 << 30)
        index = 0
        while not stop.is_set() or index < 3:
            chunk = rng.randbytes(MiB)
            for attempt in range(RETRIES):
                try:
                    await client.write_vdisk_bytes("v", chunk, offset=index * MiB)
                    written[index] = chunk
                    break
                except (ApiError, Unreachable, OSError) as exc:
                    if attempt == RETRIES - 1:
                        failures.append(f"chunk {index}: {exc}")
                    await asyncio.sleep(0.25)
            index += 1
    return written, failures


def test_a_rolling_restart_keeps_every_write(make_cluster: Callable[[int], Cluster]) -> None:
    cluster = make_cluster(3)
    cluster.fabric("up", "--config", str(cluster.config))
    urls = [n.url for n in load_config(str(cluster.dir / "cluster.toml")).nodes]
    stop = threading.Event()
    result: list[tuple[dict[int, bytes], list[str]]] = []
    writer = threading.Thread(
        target=lambda: result.append(asyncio.run(write_until(urls, cluster.token, stop)))
    )
    writer.start()
    try:
        rolled = subprocess.run(
            [sys.executable, "-m", "shell.cli", "restart", "--rolling", "--dir", str(cluster.dir)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        stop.set()
        writer.join(timeout=120)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert rolled.stdout.count("back; full resiliency") == 3, rolled.stdout
    written, failures = result[0]
    assert not failures, failures
    assert len(written) >= 3

    async def read_back() -> bytes:
        async with FabricClient(urls, token=cluster.token) as client:
            return await client.read_vdisk_bytes("v", 0, len(written) * MiB)

    data = asyncio.run(read_back())
    for index, chunk in written.items():
        assert data[index * MiB : (index + 1) * MiB] == chunk, f"chunk {index}"
    view = cluster.status()
    assert all(n["state"] == "UP" for n in view["nodes"])
    roll = next(c for c in view["containers"] if c["name"] == "roll")
    assert roll["resiliency"] == 1 and roll["reduced_resiliency_bytes"] == 0


def _hold_lock_once(node_dir: Path, log: Path, done: threading.Event) -> None:
    """Take ``node_dir``'s lock the moment its old process lets go of it, and keep it
    until the new process has said it found the lock taken: its first start fails."""
    fd = os.open(node_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.005)
        while time.monotonic() < deadline and "another process is running" not in log.read_text():
            time.sleep(0.05)
    finally:
        os.close(fd)
        done.set()


def test_a_node_that_exits_while_restarting_is_started_again(
    make_cluster: Callable[[int], Cluster],
) -> None:
    cluster = make_cluster(3)
    cluster.fabric("up", "--config", str(cluster.config))
    node_dir = cluster.dir / "nodes" / "n2"
    held = threading.Event()
    holder = threading.Thread(
        target=_hold_lock_once, args=(node_dir, node_dir / "node.log", held), daemon=True
    )
    holder.start()
    rolled = cluster.fabric("restart", "--rolling", timeout=300)
    holder.join(timeout=5)
    assert held.is_set()
    out = rolled.stdout
    assert "n2 exited while restarting (another process holds its directory)" in out, out
    assert "starting n2 again (attempt 2/3)" in out, out
    assert out.count("back; full resiliency") == 3, out
    assert all(n["state"] == "UP" for n in cluster.status()["nodes"])
