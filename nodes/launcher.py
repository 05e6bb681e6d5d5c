"""``fabric up / down / status`` for a local cluster of real node processes.

A cluster directory holds everything of one local cluster::

    DIR/cluster.toml              the config the nodes run with (written by the first up)
    DIR/nodes/<id>/node.log       the node's log
    DIR/nodes/<id>/pid            the running node's process id
    DIR/nodes/<id>/<disk>/        the node's disks (Raft state lives on the first)

``up`` on an existing directory restarts the same cluster from its own cluster.toml;
``down`` stops every node (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import psutil

from fabric import limits
from fabric.config import (
    ClusterConfig,
    ConfigError,
    default_config_text,
    load_config,
    parse_config,
    render_config,
    sized_config,
)

CONFIG_NAME = "cluster.toml"
POLL_S = 0.1
EXIT_REASONS = {
    2: "bad config or node id",
    3: "its address is already in use",
    4: "its durable state is corrupt",
    5: "another process holds its directory",
}


class LaunchError(Exception):
    """The cluster could not be started or stopped; the message says which node and why."""


@dataclass(frozen=True)
class ClusterDir:
    root: str

    @property
    def config_path(self) -> str:
        return os.path.join(self.root, CONFIG_NAME)

    def node_dir(self, node_id: str) -> str:
        return os.path.join(self.root, "nodes", node_id)

    def log_path(self, node_id: str) -> str:
        return os.path.join(self.node_dir(node_id), "node.log")

    def pid_path(self, node_id: str) -> str:
        return os.path.join(self.node_dir(node_id), "pid")

    def exists(self) -> bool:
        return os.path.exists(self.config_path)

    def config(self) -> ClusterConfig:
        if not self.exists():
            raise LaunchError(f"no cluster in {self.root} (run `fabric up` first)")
        return load_config(self.config_path)

    def pid(self, node_id: str) -> int | None:
        """The node's pid if that process is alive and is our node."""
        try:
            with open(self.pid_path(node_id)) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        try:
            proc = psutil.Process(pid)
            cmd = proc.cmdline()
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return pid if "node" in cmd and node_id in cmd else None


def resolve_dir(arg: str | None) -> str:
    return os.path.abspath(arg or os.environ.get("FABRIC_DIR") or "fabric-data")


def log_tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return "(no log)"


def prepare(
    cdir: ClusterDir, config_file: str | None, nodes: int | None, say: Callable[[str], None]
) -> ClusterConfig:
    """The config to run: the directory's own, or a new one written into it."""
    if cdir.exists():
        cfg = cdir.config()
        if config_file or (nodes and nodes != len(cfg.nodes)):
            say(
                f"note: {cdir.root} already holds cluster {cfg.name!r} with "
                f"{len(cfg.nodes)} nodes; restarting it as it is "
                "(use another --dir for a new cluster)"
            )
        return cfg
    cfg = (
        load_config(config_file)
        if config_file
        else parse_config(default_config_text(), "<embedded default config>")
    )
    if nodes is not None:
        cfg = sized_config(cfg, nodes)
    if not cfg.id:
        cfg = replace(cfg, id=uuid.uuid4().hex[:16])
    os.makedirs(cdir.root, exist_ok=True)
    with open(cdir.config_path, "w") as f:
        f.write(render_config(cfg))
    return cfg


def spawn(cdir: ClusterDir, node_id: str) -> subprocess.Popen[bytes]:
    os.makedirs(cdir.node_dir(node_id), exist_ok=True)
    with open(cdir.log_path(node_id), "ab") as logf:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fabric.cli",
                "node",
                "run",
                "--config",
                cdir.config_path,
                "--id",
                node_id,
                "--dir",
                cdir.node_dir(node_id),
            ],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
        )
    with open(cdir.pid_path(node_id), "w") as f:
        f.write(f"{proc.pid}\n")
    return proc


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None


async def _healthy(session: aiohttp.ClientSession, cfg: ClusterConfig) -> tuple[bool, str]:
    """(healthy, what is still missing)."""
    health = await asyncio.gather(*(_get(session, n.url + "/api/v1/health") for n in cfg.nodes))
    for node, h in zip(cfg.nodes, health, strict=True):
        if h is None:
            return False, f"{node.id} not answering"
        if cfg.id and h.get("cluster_id") != cfg.id:
            raise LaunchError(
                f"{node.address} (node {node.id}) is served by another cluster "
                f"({h.get('cluster', '?')}, id {h.get('cluster_id') or '-'}); "
                "stop it or choose other ports"
            )
        if not h.get("registered"):
            return False, f"{node.id} not registered"
    leaders = {h["leader"] for h in health}
    if len(leaders) != 1 or None in leaders:
        return False, "no leader agreed on yet"
    leader = cfg.node(str(leaders.pop()))
    view = await _get(session, leader.url + "/api/v1/cluster")
    if view is None:
        return False, "leader view unavailable"
    not_up = [n["id"] for n in view["nodes"] if n["state"] != "UP"]
    if not_up:
        return False, f"not UP yet: {', '.join(not_up)}"
    # Disk reports reach the leader with each node's next health report.
    unreported = [
        n["id"] for n in view["nodes"] if not all(isinstance(d, dict) for d in n.get("disks", []))
    ]
    return (not unreported), f"no disk report yet from {', '.join(unreported)}"


async def wait_healthy(
    cdir: ClusterDir,
    cfg: ClusterConfig,
    procs: dict[str, subprocess.Popen[bytes]],
    timeout_s: float,
) -> None:
    deadline = time.monotonic() + timeout_s
    missing = "starting"
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            for node_id, proc in procs.items():
                code = proc.poll()
                if code is not None:
                    why = EXIT_REASONS.get(code, f"exit code {code}")
                    raise LaunchError(
                        f"node {node_id} failed to start: {why}\n"
                        f"  log: {cdir.log_path(node_id)}\n{log_tail(cdir.log_path(node_id))}"
                    )
            healthy, missing = await _healthy(session, cfg)
            if healthy:
                return
            await asyncio.sleep(POLL_S)
    logs = "\n".join(f"  {n.id}: {cdir.log_path(n.id)}" for n in cfg.nodes)
    raise LaunchError(f"cluster not healthy after {timeout_s:.0f} s ({missing})\n{logs}")


def up(
    root: str,
    config_file: str | None,
    nodes: int | None,
    say: Callable[[str], None] = print,
    timeout_s: float = limits.STARTUP_TIMEOUT_S,
) -> ClusterConfig:
    cdir = ClusterDir(root)
    try:
        cfg = prepare(cdir, config_file, nodes, say)
    except ConfigError as exc:
        raise LaunchError(str(exc)) from exc
    started = time.monotonic()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for node in cfg.nodes:
        if cdir.pid(node.id) is None:
            procs[node.id] = spawn(cdir, node.id)
    say(f"cluster {cfg.name!r} in {cdir.root}: starting {len(procs)} of {len(cfg.nodes)} nodes")
    try:
        asyncio.run(wait_healthy(cdir, cfg, procs, timeout_s))
    except LaunchError:
        _stop(cdir, list(procs), say=lambda _: None)
        raise
    say(f"healthy in {time.monotonic() - started:.1f} s")
    return cfg


def _stop(
    cdir: ClusterDir,
    node_ids: list[str],
    say: Callable[[str], None],
    grace_s: float = limits.SHUTDOWN_GRACE_S,
) -> None:
    pids = {n: p for n in node_ids if (p := cdir.pid(n)) is not None}
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(cdir.pid(n) for n in pids):
        time.sleep(0.05)
    for node_id, pid in pids.items():
        if cdir.pid(node_id) is not None:
            say(f"{node_id} did not stop in {grace_s:.0f} s: killing pid {pid}")
            os.kill(pid, signal.SIGKILL)
        else:
            say(f"stopped {node_id} (pid {pid})")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cdir.pid_path(node_id))


def down(root: str, say: Callable[[str], None] = print) -> None:
    cdir = ClusterDir(root)
    cfg = cdir.config()
    running = [n.id for n in cfg.nodes if cdir.pid(n.id) is not None]
    if not running:
        say(f"no node of {cfg.name!r} is running in {cdir.root}")
    _stop(cdir, [n.id for n in cfg.nodes], say)


async def _status(cdir: ClusterDir, cfg: ClusterConfig) -> dict[str, Any]:
    view: dict[str, Any] | None = None
    async with aiohttp.ClientSession() as session:
        for node in cfg.nodes:
            if cdir.pid(node.id) is None:
                continue
            view = await _get(session, node.url + "/api/v1/cluster")
            if view is not None and view.get("leader") is not None:
                break
    if view is None:
        view = {
            "name": cfg.name,
            "leader": None,
            "containers": [],
            "nodes": [
                {
                    "id": n.id,
                    "address": n.address,
                    "role": "voter" if n.id in cfg.voters else "member",
                    "state": "DOWN",
                    "disks": list(n.disks),
                }
                for n in cfg.nodes
            ],
        }
    for entry in view["nodes"]:
        pid = cdir.pid(entry["id"])
        entry["pid"] = pid
        entry["dir"] = cdir.node_dir(entry["id"])
        if pid is None:
            entry["state"] = "DOWN"
    view["dir"] = cdir.root
    return view


def status(root: str) -> dict[str, Any]:
    cdir = ClusterDir(root)
    return asyncio.run(_status(cdir, cdir.config()))
