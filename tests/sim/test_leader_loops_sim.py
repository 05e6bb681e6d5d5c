"""The leader's own loops (scanner, rebuild planner, health monitor) sleep on every
other node until it leads, instead of waking each period to find nothing to do: in a
big cluster that is most nodes and most of an idle node's wake-ups."""

from __future__ import annotations

from fabric import limits
from nodes.simcluster import SimCluster

SEED = 1


def test_a_followers_leader_loops_wait_for_leadership_and_run_once_it_leads(
    sim: SimCluster,
) -> None:
    leader = sim.leader()
    follower = sim.nodes[next(n for n in sim.nodes if n != leader)]
    metadata = follower.metadata
    calls: list[int] = []
    waiting = metadata.until_leader

    async def counted() -> None:
        calls.append(1)
        await waiting()

    metadata.until_leader = counted  # type: ignore[method-assign]
    periods = 20
    slowest = max(limits.SCAN_EVERY_S, limits.REBUILD_EVERY_S, limits.HEALTH_MONITOR_EVERY_S)
    sim.run(sim.sleep(periods * slowest))
    # Each loop asks at most once (if it was between two waits when counting began);
    # a loop that polled would ask once a period.
    assert len(calls) <= 3, f"seed {SEED}: {len(calls)} waits in {periods} periods"
    assert not metadata.is_leader
    # Once another node leads, its health monitor wakes and calls the old leader DOWN.
    gone = leader or ""
    sim.crash(gone)

    def down() -> bool:
        now = sim.leader()
        return now is not None and sim.nodes[now].metadata.state.nodes()[gone].state == "DOWN"

    sim.run(sim.wait_for(down, 60, f"seed {SEED}: the new leader calls {gone} DOWN"))
