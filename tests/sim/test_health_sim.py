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
