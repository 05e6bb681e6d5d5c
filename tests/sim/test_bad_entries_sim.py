"""Garbage straight into Raft: the cluster stays available, and restarts over it.

Release 0.1 raised inside apply for such entries: the Raft driver died on every node,
and on restart the log replayed into the same crash. Here a leader's Raft is handed
entries no honest proposer makes (bypassing ``propose``'s checks, as a forged peer
message would); every node must refuse them, keep serving, and replay them after a
power loss of the whole cluster.
"""

from __future__ import annotations

import msgpack
import pytest

from fabric.metadata.commands import Put
from fabric.wire.codec import WIRE_VERSION, encode
from nodes.simcluster import SimCluster
from tests.sim.conftest import started

BAD_ENTRIES = [
    b"\xc1 not msgpack",
    msgpack.packb([WIRE_VERSION, msgpack.ExtType(1, msgpack.packb([32, "vd", 1, 2]))]),
    encode(Put("container/evil", "junk")),
    encode(Put("node/n1", {"state": "UP"})),
    encode(Put("kv/fine", float("inf"))),
]


def inject(sim: SimCluster) -> None:
    leader = sim.leader()
    assert leader is not None, f"seed {sim.seed}: no leader"
    node = sim.nodes[leader]
    raft = node.metadata.raft
    assert raft is not None
    for data in BAD_ENTRIES:
        raft.propose(data)
    node.metadata.wake()


async def kv_round_trip(sim: SimCluster, key: str) -> None:
    via = sim.nodes[sorted(sim.nodes)[-1]]
    result = await via.metadata.propose(Put(f"kv/{key}", key))
    assert result.ok, f"seed {sim.seed}: {result}"
    for node in sim.nodes.values():
        await node.metadata.read_index()
        assert node.metadata.state.value(f"kv/{key}") == key, f"seed {sim.seed}: {node.id}"


@pytest.mark.parametrize("seed", range(4))
def test_malformed_entries_are_refused_everywhere_and_survive_a_restart(seed: int) -> None:
    sim = started(nodes=3, seed=900 + seed)
    try:
        inject(sim)
        sim.run(kv_round_trip(sim, "after"))
        for node in sim.nodes.values():
            assert node.metadata.state.refused_malformed == len(BAD_ENTRIES), (
                f"seed {sim.seed}: {node.id} refused {node.metadata.state.refused_malformed}"
            )
            assert node.metadata.state.container("evil") is None
        for node_id in sorted(sim.nodes):
            sim.crash(node_id)
        for node_id in sorted(sim.disks):
            sim.run(sim.restart(node_id))
        sim.run(
            sim.wait_for(
                lambda: sim.leader() is not None and all(n.registered for n in sim.nodes.values()),
                30,
                "a leader and every node registered after the restart",
            )
        )
        sim.run(kv_round_trip(sim, "after-restart"))
        for node in sim.nodes.values():
            assert node.metadata.state.value("kv/after") == "after"
    finally:
        sim.close()
