"""Applying an experiment's fault schedule.

Every fault goes to ``POST /api/v1/faults`` (issue 12's contract 2), which resolves
its target, clears it after its duration and records it in the event log. Where that
API is missing (a 404 or 405 answer: a fabric built without it), node faults fall back
to the runner's own signals on the local processes, by pid from the cluster directory:
``node-kill`` is SIGKILL (the node is started again when the fault's duration ends, as
it is after a kill through the API),
``node-pause``/``node-resume`` are SIGSTOP/SIGCONT, ``node-restart`` a kill and a start.
Every other kind is then skipped, and the report says so.

Targets the API does not know (``fabric.scenario.RUNNER_SELECTS``: ``follower``) are
resolved here, from the last view of the cluster, before the fault is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fabric.config import ClusterConfig
from fabric.scenario import FaultStep
from fabric.timeline import FaultBand
from shell.client import ApiError, Unreachable
from shell.experiment.api import ClusterApi
from shell.experiment.workloads import RunClock
from shell.launcher import ClusterDir, spawn

PROCESS_KINDS = ("node-kill", "node-pause", "node-resume", "node-restart")


@dataclass
class FaultApplier:
    client: ClusterApi
    cdir: ClusterDir | None
    """The local cluster (signals, restarts); None under simulation, which overrides them."""
    cfg: ClusterConfig
    clock: RunClock
    rng: random.Random
    view: Callable[[], dict[str, Any] | None]
    """The sampler's last view of the cluster (for ``leader`` and ``follower``)."""
    say: Callable[[str], None]
    bands: list[FaultBand] = field(default_factory=list)
    api_missing: bool = False
    killed: set[str] = field(default_factory=set)
    paused: set[str] = field(default_factory=set)
    spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)

    async def run(self, step: FaultStep) -> None:
        """Wait for the step's time, apply it, and (fallback) undo it when it ends."""
        wait = step.at_s - self.clock.now()
        if wait > 0:
            await asyncio.sleep(wait)
        start = self.clock.now()
        target = self._runner_target(step.target)
        if not self.api_missing:
            try:
                answer = await self.client.inject_fault(
                    step.kind, target, step.params, step.duration_s
                )
            except ApiError as exc:
                if exc.status not in (404, 405):
                    self._band(step, start, (), "skipped", f"refused: {exc}")
                    return
                self.api_missing = True
                self.say("the faults API is missing: node faults fall back to signals")
            except Unreachable as exc:
                if step.kind not in PROCESS_KINDS or self.cdir is None:
                    self._band(step, start, (), "skipped", f"no answer: {exc}")
                    return
                # The node that took the call may be one the fault stopped before its
                # answer left: the runner applies the step itself, as an operator would.
                self.say(f"{step.kind}: no answer from the faults API ({exc}): signalling")
            else:
                end = None if step.duration_s is None else start + step.duration_s
                nodes = tuple(answer.get("nodes", ()))
                self.bands.append(FaultBand(start, end, step.kind, nodes, "api"))
                if step.kind == "node-kill" and step.duration_s is not None:
                    await self._start_again(nodes, step.duration_s)
                return
        await self._fallback(step, target, start)

    async def _start_again(self, nodes: tuple[str, ...], after_s: float) -> None:
        """A killed node stays dead (nothing in the cluster starts processes): a kill with
        a duration ends with the runner starting the node again, as an operator would."""
        await asyncio.sleep(after_s)
        for node in nodes:
            if self._local().pid(node) is None:
                self.spawned.append(spawn(self._local(), node))

    def _local(self) -> ClusterDir:
        assert self.cdir is not None, "signals and restarts need the local cluster's directory"
        return self.cdir

    def _band(
        self, step: FaultStep, start: float, nodes: tuple[str, ...], via: str, detail: str = ""
    ) -> None:
        end = None if step.duration_s is None else start + step.duration_s
        self.bands.append(FaultBand(start, end, step.kind, nodes, via, detail))

    def _runner_target(self, target: dict[str, Any]) -> dict[str, Any]:
        if target.get("select") != "follower":
            return target
        view = self.view() or {}
        leader = view.get("leader")
        up = [n["id"] for n in view.get("nodes", []) if n.get("state") == "UP"]
        choices = [n for n in up if n != leader] or [n.id for n in self.cfg.nodes]
        return {"nodes": [self.rng.choice(sorted(choices))]}

    def _nodes(self, target: dict[str, Any]) -> list[str]:
        """The fallback's own resolution of a target (the API's selects, seeded)."""
        ids = [n.id for n in self.cfg.nodes]
        if "nodes" in target:
            return [n for n in target["nodes"] if n in ids]
        select = str(target.get("select", "one"))
        view = self.view() or {}
        if select == "leader":
            return [view["leader"]] if view.get("leader") else []
        if select == "all":
            return ids
        if select.startswith("rack:"):
            return [n.id for n in self.cfg.nodes if n.labels.get("rack") == select[5:]]
        count = {"one": 1, "minority": (len(ids) - 1) // 2, "majority": len(ids) // 2 + 1}
        return sorted(self.rng.sample(ids, max(1, count.get(select, 1))))

    async def _fallback(self, step: FaultStep, target: dict[str, Any], start: float) -> None:
        if step.kind not in PROCESS_KINDS:
            self._band(step, start, (), "skipped", "needs the faults API")
            return
        nodes = self._nodes(target)
        for node in nodes:
            self._signal(step.kind, node)
        self._band(step, start, tuple(nodes), "process")
        if step.kind in ("node-kill", "node-pause") and step.duration_s is not None:
            await asyncio.sleep(step.duration_s)
            for node in nodes:
                self._undo(node)

    def _signal(self, kind: str, node: str) -> None:
        pid = self._local().pid(node)
        match kind:
            case "node-kill" | "node-restart":
                if pid is not None:
                    self._kill(pid)
                self.killed.add(node)
                if kind == "node-restart":
                    self._undo(node)
            case "node-pause":
                if pid is not None:
                    os.kill(pid, signal.SIGSTOP)
                    self.paused.add(node)
            case "node-resume":
                for n in sorted(self.paused):
                    self._undo(n)

    @staticmethod
    def _kill(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # our child (the launcher spawned it): reap it

    def _undo(self, node: str) -> None:
        if node in self.paused:
            pid = self._local().pid(node)
            if pid is not None:
                os.kill(pid, signal.SIGCONT)
            self.paused.discard(node)
        if node in self.killed:
            self.killed.discard(node)
            if self._local().pid(node) is None:
                self.spawned.append(spawn(self._local(), node))

    def restore(self, restart_killed: bool) -> None:
        """End every fallback fault still on: resume paused nodes, and start killed ones
        again when the cluster outlives the run (``--dir``)."""
        for node in sorted(self.paused):
            self._undo(node)
        if restart_killed:
            for node in sorted(self.killed):
                self._undo(node)

    def reap(self) -> None:
        for proc in self.spawned:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0)
