"""``fabric node add / remove / replace``: change a local cluster's nodes while it runs.

Adding a node: its entry goes into the cluster directory's ``cluster.toml`` (the config
every node restarts from), the cluster records it and adds it to Raft as a learner
(``POST /api/v1/nodes``), its process starts and catches up; with ``--voter`` it is
then promoted (the leader waits until it has caught up). The rebuild's rebalancer then
moves data onto it. Removing a node: it is drained first (every copy moved off,
``fabric node drain``), then removed from Raft and the membership, stopped, and dropped
from ``cluster.toml``. Replacing a dead voter: a new voter is added, then the dead one
is removed (its copies are rebuilt elsewhere meanwhile). After each, ``fabric status``
and ``cluster.toml`` list the same nodes and voters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import time
from collections.abc import Callable
from typing import Any

from fabric import limits
from fabric.config import ClusterConfig, NodeConfig, render_config
from shell.launcher import (
    POLL_S,
    ClusterDir,
    LaunchError,
    _get_now,
    _stop,
    log_tail,
    spawn,
    write_private,
)


def _next_id(cfg: ClusterConfig) -> str:
    numbers = [int(m.group(1)) for n in cfg.nodes if (m := re.fullmatch(r"n(\d+)", n.id))]
    return f"n{max(numbers, default=0) + 1}"


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _next_port(cfg: ClusterConfig, host: str) -> int:
    port = max(n.port for n in cfg.nodes) + 1
    while not _port_free(host, port):
        port += 1
    return port


def _save(cdir: ClusterDir, cfg: ClusterConfig) -> None:
    write_private(cdir.config_path, render_config(cfg))


def _client(cdir: ClusterDir, cfg: ClusterConfig, last: str = "") -> Any:
    """A client of the cluster that asks node ``last`` only if no other answers (a node
    being removed is the wrong one to ask about its own removal)."""
    from shell.client import FabricClient

    urls = [n.url for n in cfg.nodes if n.id != last] + [n.url for n in cfg.nodes if n.id == last]
    access = cdir.access(cfg)
    return FabricClient(
        urls, limits.MEMBERSHIP_CHANGE_TIMEOUT_S * 2, cfg.id, access.token, access.ssl_context
    )


def _wait_registered(cdir: ClusterDir, node: NodeConfig, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    access = cdir.access(cdir.config())
    while time.monotonic() < deadline:
        if cdir.pid(node.id) is None:
            raise LaunchError(
                f"{node.id} exited at start; its log:\n{log_tail(cdir.log_path(node.id))}"
            )
        health = _get_now(node.url + "/api/v1/health", access)
        if isinstance(health, dict) and health.get("registered"):
            return
        time.sleep(POLL_S)
    raise LaunchError(f"{node.id} did not join in {timeout_s:.0f} s; log {cdir.log_path(node.id)}")


def add_node(
    root: str,
    voter: bool = False,
    rack: str | None = None,
    node_id: str | None = None,
    say: Callable[[str], None] = print,
) -> NodeConfig:
    cdir = ClusterDir(root)
    cfg = cdir.config()
    template = cfg.nodes[0]
    new_id = node_id or _next_id(cfg)
    if any(n.id == new_id for n in cfg.nodes):
        raise LaunchError(f"node {new_id} is already in {cdir.config_path}")
    labels = {"rack": rack} if rack else {}
    nc = NodeConfig(
        new_id,
        template.host,
        _next_port(cfg, template.host),
        template.disks,
        labels,
        template.disk_capacity,
        template.scheme,
    )
    member = {
        "id": nc.id,
        "host": nc.host,
        "port": nc.port,
        "disks": list(nc.disks),
        "labels": labels,
        "disk_capacity": list(nc.disk_capacity),
    }

    async def record() -> None:
        async with _client(cdir, cfg) as client:
            await client.add_node(member)

    asyncio.run(record())
    grown = dataclasses.replace(cfg, nodes=(*cfg.nodes, nc))
    _save(cdir, grown)
    say(f"{nc.id}: added at {nc.address} as a learner; starting it")
    spawn(cdir, nc.id)
    _wait_registered(cdir, nc, limits.STARTUP_TIMEOUT_S)
    if voter:

        async def promote() -> None:
            async with _client(cdir, grown) as client:
                await client.promote(nc.id)

        asyncio.run(promote())
        _save(cdir, dataclasses.replace(grown, voters=(*grown.voters, nc.id)))
        say(f"{nc.id}: caught up and promoted to voter")
    say(f"{nc.id}: joined; data moves onto it in the background (fabric events)")
    return nc


async def wait_drained(
    client: Any, node_id: str, view: dict[str, Any], say: Callable[[str], None]
) -> dict[str, Any]:
    """Poll a drain until the node holds nothing; ``LaunchError`` if what it holds stops
    shrinking for ``limits.DRAIN_STALL_S`` (no room elsewhere, no source left)."""
    progress_at, least = time.monotonic(), view["held_bytes"]
    while view["groups"] or view["strips"]:
        say(f"{node_id}: draining, {view['held_bytes']} bytes still to move")
        if view["held_bytes"] < least:
            progress_at, least = time.monotonic(), view["held_bytes"]
        elif time.monotonic() - progress_at > limits.DRAIN_STALL_S:
            raise LaunchError(
                f"{node_id}: the drain made no progress for {limits.DRAIN_STALL_S:.0f} s with "
                f"{view['groups']} groups and {view['strips']} strip members left "
                "(see fabric events: rebuild_stuck)"
            )
        await asyncio.sleep(1.0)
        view = await client.drain(node_id)
    return view


def remove_node(root: str, node_id: str, say: Callable[[str], None] = print) -> None:
    cdir = ClusterDir(root)
    cfg = cdir.config()
    cfg.node(node_id)  # ConfigError naming the ids, if it is not one of them

    async def drain_and_remove() -> None:
        async with _client(cdir, cfg, last=node_id) as client:
            await wait_drained(client, node_id, await client.drain(node_id, undo=False), say)
            await client.remove_node(node_id)

    asyncio.run(drain_and_remove())
    _stop(cdir, [node_id], say=lambda _: None)
    _save(
        cdir,
        dataclasses.replace(
            cfg,
            nodes=tuple(n for n in cfg.nodes if n.id != node_id),
            voters=tuple(v for v in cfg.voters if v != node_id),
        ),
    )
    say(f"{node_id}: drained, removed from the cluster and stopped")


def replace_node(
    root: str, dead: str, new_id: str | None = None, say: Callable[[str], None] = print
) -> NodeConfig:
    """A new voter in, then the dead one out (its data rebuilt elsewhere meanwhile)."""
    cfg = ClusterDir(root).config()
    was_voter = dead in cfg.voters
    nc = add_node(root, voter=was_voter, node_id=new_id, say=say)
    remove_node(root, dead, say=say)
    return nc
