"""``fabric restart --rolling``: restart a local cluster's nodes one at a time.

The way an operator upgrades a running cluster (Nutanix's Life Cycle Manager does it
node by node): before each node is stopped the cluster must be at full resiliency, and
the next node waits until the restarted one is UP again and no byte is left at reduced
resiliency. Followers go first and the leader last, so leadership moves once. Clients
keep working throughout; a write that reached the node as it stopped is retried by the
client (``FabricClient`` moves to another node).

Nothing here is a sleep that stands in for a condition: each wait polls the cluster
until the condition holds or its deadline passes.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from fabric import limits
from fabric.config import ClusterConfig
from shell.launcher import (
    EXIT_REASONS,
    POLL_S,
    Access,
    ClusterDir,
    LaunchError,
    _get_now,
    _stop,
    log_tail,
    spawn,
)


def _view(cdir: ClusterDir, cfg: ClusterConfig, access: Access) -> dict[str, Any] | None:
    """The leader's cluster view, asked of any running node; None if none answers."""
    for node in cfg.nodes:
        if cdir.pid(node.id) is None:
            continue
        view = _get_now(node.url + "/api/v1/cluster", access)
        if isinstance(view, dict) and view.get("leader") and not view.get("stale"):
            return view
    return None


def whole(view: dict[str, Any] | None) -> str:
    """ "" when every node is UP and no byte is at reduced resiliency; else what is not."""
    if view is None:
        return "no leader answers"
    down = [n["id"] for n in view["nodes"] if n["state"] != "UP"]
    if down:
        return f"not UP: {', '.join(down)}"
    reduced = [
        f"{c['name']} ({c.get('reduced_resiliency_bytes', 0)} bytes)"
        for c in view.get("containers", [])
        if c.get("reduced_resiliency_bytes")
    ]
    return f"at reduced resiliency: {', '.join(reduced)}" if reduced else ""


START_ATTEMPTS = 3
"""How often a node that exits while starting again is started anew. Only for exits
that may pass (its old process still releasing the port or the directory lock, a
signal); a bad config or a corrupt log stops the restart at once."""
PERMANENT_EXITS = frozenset({2, 4})


class NodeExited(LaunchError):
    def __init__(self, node: str, code: int, log: str) -> None:
        if code < 0:
            why = f"killed by {signal.Signals(-code).name}"
        else:
            why = EXIT_REASONS.get(code, f"exit code {code}")
        super().__init__(f"{node} exited while restarting ({why}); its log:\n{log}")
        self.code = code


def _wait_whole(
    cdir: ClusterDir,
    cfg: ClusterConfig,
    access: Access,
    timeout_s: float,
    node: str,
    proc: subprocess.Popen[bytes],
) -> None:
    """Until the restarted ``node`` itself says it registered again, and then the
    cluster is whole. (A quick restart may never have been seen DOWN by the leader:
    its view alone would say "whole" while the node is still starting.)"""
    deadline = time.monotonic() + timeout_s
    url = cfg.node(node).url
    why = "starting"
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise NodeExited(node, code, log_tail(cdir.log_path(node)))
        health = _get_now(url + "/api/v1/health", access)
        if not (isinstance(health, dict) and health.get("registered")):
            why = f"{node} not registered yet"
        else:
            why = whole(_view(cdir, cfg, access))
            if not why:
                return
        time.sleep(POLL_S)
    raise LaunchError(f"cluster not back to full resiliency in {timeout_s:.0f} s ({why})")


def rolling_restart(
    root: str,
    say: Callable[[str], None] = print,
    timeout_s: float = limits.STARTUP_TIMEOUT_S,
) -> list[str]:
    """Restart every running node in turn; the order used."""
    cdir = ClusterDir(root)
    cfg = cdir.config()
    access = cdir.access(cfg)
    view = _view(cdir, cfg, access)
    why = whole(view)
    if why:
        raise LaunchError(f"not restarting: the cluster is not at full resiliency ({why})")
    leader = view["leader"] if view else None
    running = [n.id for n in cfg.nodes if cdir.pid(n.id) is not None]
    order = [n for n in running if n != leader] + [n for n in running if n == leader]
    for i, node in enumerate(order, 1):
        started = time.monotonic()
        say(f"[{i}/{len(order)}] restarting {node}")
        _stop(cdir, [node], say=lambda _: None)
        _start_again(cdir, cfg, access, timeout_s, node, say)
        say(
            f"[{i}/{len(order)}] {node} back; full resiliency in {time.monotonic() - started:.1f} s"
        )
    return order


def _start_again(
    cdir: ClusterDir,
    cfg: ClusterConfig,
    access: Access,
    timeout_s: float,
    node: str,
    say: Callable[[str], None],
) -> None:
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            _wait_whole(cdir, cfg, access, timeout_s, node, spawn(cdir, node))
            return
        except NodeExited as exc:
            if exc.code in PERMANENT_EXITS or attempt == START_ATTEMPTS:
                raise
            say(f"  {exc}\n  starting {node} again (attempt {attempt + 1}/{START_ATTEMPTS})")
