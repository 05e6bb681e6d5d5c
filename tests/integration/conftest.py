"""Real node processes on loopback, driven through the ``fabric`` command line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from fabric.config import default_config_text, parse_config, render_config, sized_config


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def write_config(
    path: Path, nodes: int, voters: int | None = None, import_allow: tuple[str, ...] = ()
) -> Path:
    """A config of ``nodes`` nodes on free loopback ports (``voters``: first N are voters;
    ``import_allow``: the ``[import] allow`` list, for tests that import from loopback)."""
    cfg = sized_config(parse_config(default_config_text()), nodes)
    ports = free_ports(nodes)
    cfg = replace(
        cfg,
        nodes=tuple(replace(n, port=p) for n, p in zip(cfg.nodes, ports, strict=True)),
        voters=cfg.voters if voters is None else tuple(n.id for n in cfg.nodes[:voters]),
        import_allow=import_allow,
    )
    path.write_text(render_config(cfg))
    return path


@dataclass
class Cluster:
    dir: Path
    config: Path

    def fabric(
        self, *args: str, check: bool = True, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [sys.executable, "-m", "shell.cli", *args, "--dir", str(self.dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"fabric {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
            )
        return out

    @property
    def token(self) -> str:
        """The admin token ``fabric up`` wrote into the cluster directory."""
        return (self.dir / "admin.token").read_text().strip()

    def status(self) -> dict[str, Any]:
        view: dict[str, Any] = json.loads(self.fabric("status", "--json").stdout)
        return view

    def wait(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout_s: float = 30,
        what: str = "condition",
    ) -> dict[str, Any]:
        """Poll ``fabric status`` until ``predicate`` holds (a deadline, not a sleep)."""
        deadline = time.monotonic() + timeout_s
        while True:
            view = self.status()
            if predicate(view):
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached in {timeout_s} s: {view}")
            time.sleep(0.2)


def running_cluster(
    factory: pytest.TempPathFactory, name: str, nodes: int = 3
) -> Iterator[Cluster]:
    """A cluster up for a whole module (a module-scoped fixture yields from this)."""
    root = factory.mktemp(name)
    cluster = Cluster(root / "data", write_config(root / "cluster.toml", nodes))
    cluster.fabric("up", "--config", str(cluster.config))
    yield cluster
    cluster.fabric("down", check=False)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(nodes: int, voters: int | None = None, import_allow: tuple[str, ...] = ()) -> Cluster:
        root = tmp_path / f"cluster{len(made)}"
        root.mkdir()
        config = write_config(root / "cluster.toml", nodes, voters, import_allow)
        cluster = Cluster(root / "data", config)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        if (cluster.dir / "cluster.toml").exists():
            cluster.fabric("down", check=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


__all__ = ["Cluster", "free_ports", "os"]
