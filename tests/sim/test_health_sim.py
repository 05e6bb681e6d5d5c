"""Node health on the leader: a node is alive while it reports or answers Raft.

A Raft answer (to an append or a heartbeat) proves as much as a report that the node
runs and hears the leader, so a node whose reports stop but whose Raft still answers
stays UP; one that does neither goes DEGRADED, then DOWN.
"""

from __future__ import annotations

from nodes.simcluster import SimCluster

SEED = 1


def _state(sim: SimCluster, node: str) -> str:
    leader = sim.nodes[sim.leader() or ""]
    return leader.metadata.state.nodes()[node].state


def test_a_node_that_answers_raft_but_stops_reporting_stays_up(sim: SimCluster) -> None:
    leader = sim.leader()
    node = next(n for n in sim.nodes if n != leader)
    reports = [t for t in sim.nodes[node]._tasks if t.get_name() == f"{node}:health-report"]
    assert len(reports) == 1, f"seed {SEED}: {[t.get_name() for t in sim.nodes[node]._tasks]}"
    reports[0].cancel()
    t = sim.config.timeouts
    # Long past DEGRADED and DOWN for a node that said nothing at all.
    sim.run(sim.sleep(3 * t.down_after_ms / 1000))
    assert _state(sim, node) == "UP", f"seed {SEED}: {node} went {_state(sim, node)}"
    sim.crash(node)
    sim.run(
        sim.wait_for(
            lambda: _state(sim, node) == "DOWN",
            3 * t.down_after_ms / 1000,
            f"seed {SEED}: {node} DOWN once it neither reports nor answers",
        )
    )


def test_a_new_leader_keeps_a_down_node_down_until_it_hears_from_it(sim: SimCluster) -> None:
    """A new leader gives every node a full grace period from its election, so a failover
    does not call the cluster DOWN; but that grace is no sign of life: the node the old
    leader found DOWN must not be UP (a rebuild target) or DEGRADED again meanwhile."""
    old = sim.leader()
    assert old is not None
    victim = next(n for n in sorted(sim.nodes) if n not in sim.config.voters)
    t = sim.config.timeouts
    sim.crash(victim)
    sim.run(
        sim.wait_for(
            lambda: _state(sim, victim) == "DOWN", 3 * t.down_after_ms / 1000, f"{victim} DOWN"
        )
    )
    since = sim.nodes[old].metadata.state.nodes()[victim].state_since
    sim.crash(old)
    sim.run(sim.wait_for(lambda: sim.leader() not in (None, old), 30, "a new leader"))
    new = sim.leader()
    assert new is not None
    # Past the grace the new leader gives, and past a DOWN timeout after it.
    sim.run(sim.sleep(3 * t.down_after_ms / 1000))
    record = sim.nodes[new].metadata.state.nodes()[victim]
    assert (record.state, record.state_since) == ("DOWN", since), f"seed {SEED}: {record}"
