"""Several hosts, as users run it (docs/DEPLOY.md): one config, one secret, one CA; every
node started by hand with ``fabric node run`` on its own address (127.0.0.2 … 127.0.0.6),
node authentication, tokens and TLS on."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fabric.config import (
    default_config_text,
    load_config,
    parse_config,
    render_config,
    sized_config,
)
from nodes.tls import client_context
from shell.client import ApiError, FabricClient, Unreachable

HOSTS = [f"127.0.0.{i}" for i in range(2, 7)]
NODE_RUN = [sys.executable, "-m", "shell.cli", "node", "run"]
MiB = 1 << 20


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """The cluster directory made by `fabric init --tls`, and the nodes' URLs."""
    root = tmp_path_factory.mktemp("hosts")
    base = sized_config(parse_config(default_config_text()), len(HOSTS))
    nodes = tuple(
        replace(n, host=h, port=free_port(h), disks=("disk0",))
        for n, h in zip(base.nodes, HOSTS, strict=True)
    )
    (root / "hosts.toml").write_text(render_config(replace(base, nodes=nodes)))
    made = root / "made"
    init = fabric("init", "--config", str(root / "hosts.toml"), "--tls", "--dir", str(made))
    assert init.returncode == 0, init.stderr
    procs: list[subprocess.Popen[bytes]] = []
    for n in nodes:
        # Each "host" gets its copy of the files, as scp -p would give it.
        etc = root / n.host / "etc"
        etc.mkdir(parents=True)
        for name in ("cluster.toml", "cluster.secret"):
            shutil.copy2(made / name, etc / name)
        shutil.copytree(made / "tls", etc / "tls")
        data = root / n.host / "data"
        args = ["--config", str(etc / "cluster.toml"), "--id", n.id, "--dir", str(data)]
        with open(root / n.host / "node.log", "wb") as log:  # the child keeps its own copy
            procs.append(
                subprocess.Popen(
                    [*NODE_RUN, *args, "--secret", str(etc / "cluster.secret")],
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            )
    try:
        yield made, [f"https://{n.host}:{n.port}" for n in nodes]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def fabric(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shell.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def client(made: Path, urls: list[str], token: str | None = None) -> FabricClient:
    cfg = load_config(str(made / "cluster.toml"))
    ssl = client_context(cfg.tls, str(made / "cluster.toml"))
    admin = (made / "admin.token").read_text().strip()
    return FabricClient(urls, 30, cfg.id, admin if token is None else token, ssl)


async def wait_whole(made: Path, urls: list[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    async with client(made, urls) as c:
        while True:
            try:
                view = await c.cluster()
                if view["leader"] and all(n["state"] == "UP" for n in view["nodes"]):
                    return view
            except (ApiError, Unreachable):
                pass
            assert time.monotonic() < deadline, "no healthy cluster of five hosts in 60 s"
            await asyncio.sleep(0.2)


def test_nodes_on_five_addresses_form_one_authenticated_encrypted_cluster(
    hosts: tuple[Path, list[str]],
) -> None:
    made, urls = hosts
    view = asyncio.run(wait_whole(made, urls))
    assert {n["address"].split(":")[0] for n in view["nodes"]} == set(HOSTS)

    async def story() -> None:
        data = bytes(range(256)) * 4096 * 3  # 3 MiB through the node on 127.0.0.3
        async with client(made, [urls[1]]) as c:
            await c.create_container("spread", rf=3)
            await c.create_vdisk("v", "spread", 4 * MiB)
            await c.write_vdisk_bytes("v", data)
            operator = (await c.create_token("ci", "operator"))["token"]
        async with client(made, [urls[4]], token=operator) as c:  # another host reads
            assert await c.read_vdisk_bytes("v", 0, len(data)) == data
            with pytest.raises(ApiError) as refused:
                await c.create_container("nope", rf=1)
            assert refused.value.status == 403
        async with client(made, [urls[2]], token="") as c:
            with pytest.raises(ApiError) as refused:
                await c.cluster()
            assert refused.value.status == 401

    asyncio.run(story())

    # Plain HTTP finds no one to talk to, and each node listens on its own address only.
    host, port = urls[0].removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /api/v1/health HTTP/1.0\r\n\r\n")
        assert not s.recv(1024).startswith(b"HTTP/1.")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
