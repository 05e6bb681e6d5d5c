"""The fault schedule of a simulated experiment.

Faults go through the same door as in ``fabric run``: ``FaultApplier`` sends each one to
``/api/v1/faults`` (here ``SimClient.inject_fault``: the receiving node's own
``FaultCoordinator`` resolves the target and tells each acting node's ``FaultAgent``),
and every node carries the fault wrappers of a real process (``SimCluster(faults=True)``)
around its simulated clock, disks and sends. What differs is the process: a kill or a
restart is ``SimCluster.crash`` / ``restart``, and a kill with a duration ends with the
node started again from its disks, as the runner of ``fabric run`` does it.

A pause is ``SimCluster.pause``: the loop holds every callback of the node's tasks and
whatever arrives for it until ``resume`` (see ``fabric.sim.loop``), so the node keeps its
memory and runs nothing, as under SIGSTOP. A pause with a duration ends by itself (the
node's agent schedules it, as a real one starts its resumer); ``node-resume`` is the
runner's to apply, as ``fabric run``'s SIGCONT is: a paused node answers no API.
Every fault kind of ``fabric.faults`` is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fabric.scenario import FaultStep
from nodes.simcluster import SimCluster
from shell.experiment.faults import FaultApplier


@dataclass
class SimFaultApplier(FaultApplier):
    sim: SimCluster | None = None
    restarting: list[str] = field(default_factory=list)

    async def run(self, step: FaultStep) -> None:
        if step.kind != "node-resume":
            await super().run(step)
            return
        assert self.sim is not None, "a simulated applier knows its cluster"
        wait = step.at_s - self.clock.now()
        if wait > 0:
            await self.sim.clock.sleep(wait)
        start = self.clock.now()
        nodes = sorted(set(self._nodes(self._runner_target(step.target))) & self.sim.paused())
        for node in nodes:
            self.sim.resume(node)
        self._band(step, start, tuple(nodes), "process")

    def resume_all(self) -> None:
        """End every pause still on (the run is over: as ``restore`` does for signals)."""
        assert self.sim is not None, "a simulated applier knows its cluster"
        for node in sorted(self.sim.paused()):
            self.sim.resume(node)

    async def _start_again(self, nodes: tuple[str, ...], after_s: float) -> None:
        assert self.sim is not None, "a simulated applier knows its cluster"
        await self.sim.clock.sleep(after_s)
        for node in nodes:
            if node not in self.sim.nodes:
                self.restarting.append(node)
                await self.sim.restart(node)
