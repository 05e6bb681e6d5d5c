"""The fault schedule of a simulated experiment.

Faults go through the same door as in ``fabric run``: ``FaultApplier`` sends each one to
``/api/v1/faults`` (here ``SimClient.inject_fault``: the receiving node's own
``FaultCoordinator`` resolves the target and tells each acting node's ``FaultAgent``),
and every node carries the fault wrappers of a real process (``SimCluster(faults=True)``)
around its simulated clock, disks and sends. What differs is the process: a kill or a
restart is ``SimCluster.crash`` / ``restart``, and a kill with a duration ends with the
node started again from its disks, as the runner of ``fabric run`` does it.

A paused process keeps its memory but runs nothing; the simulator has no way to stop
one node's tasks while the others run, so ``node-pause`` and ``node-resume`` are refused
before the run starts (``check_kinds``), never silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fabric import faults
from fabric.scenario import Scenario, ScenarioError, schedule
from nodes.simcluster import SimCluster
from shell.experiment.faults import FaultApplier

NOT_SIMULATED = {
    "node-pause": "a paused process keeps its state but runs nothing; the simulator cannot "
    "stop one node's tasks while the others run",
    "node-resume": "it ends a node-pause, which is not simulated",
}
SIMULATED_KINDS = tuple(k for k in faults.KINDS if k not in NOT_SIMULATED)


def check_kinds(scenario: Scenario, seed: int) -> None:
    """Refuse a scenario that may inject a kind the simulator cannot apply (whatever the
    seed draws: a nemesis that lists it is refused too)."""
    kinds = {s.kind for s in schedule(scenario, seed)}
    if scenario.nemesis is not None:
        kinds |= set(scenario.nemesis.kinds)
    for kind in sorted(kinds):
        if kind in NOT_SIMULATED:
            raise ScenarioError(
                f"{scenario.origin}: fault kind {kind!r} is not simulated yet "
                f"({NOT_SIMULATED[kind]}); fabric sim applies: {', '.join(SIMULATED_KINDS)}"
            )


@dataclass
class SimFaultApplier(FaultApplier):
    sim: SimCluster | None = None
    restarting: list[str] = field(default_factory=list)

    async def _start_again(self, nodes: tuple[str, ...], after_s: float) -> None:
        assert self.sim is not None, "a simulated applier knows its cluster"
        await self.sim.clock.sleep(after_s)
        for node in nodes:
            if node not in self.sim.nodes:
                self.restarting.append(node)
                await self.sim.restart(node)
