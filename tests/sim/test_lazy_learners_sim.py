"""The learners of a big cluster (``timing = "large-cluster"``) get the log with their
90 s heartbeats, not entry by entry, yet nothing that waits on one of them waits for
that heartbeat: a proposal made through a learner, a read through another learner (still
linearizable), and the news of a new leader all reach it at once.
"""

from __future__ import annotations

from fabric.config import LARGE_CLUSTER_TIMEOUTS
from fabric.metadata.commands import Put
from nodes.simcluster import SimCluster
from tests.sim.conftest import started

SEED = 4
FAST_S = 2.0
"""Well under a learner heartbeat (90 s): what "at once" means here."""
QUIET_S = 20.0
"""How long after a write another learner still has not heard of it (its heartbeat comes
every 90 s, so it may have come just before the write)."""


def large() -> SimCluster:
    return started(nodes=6, seed=SEED, timeouts=LARGE_CLUSTER_TIMEOUTS)


def test_a_learner_lags_between_heartbeats_but_reads_every_committed_write() -> None:
    with large() as sim:
        learners = [n for n in sim.nodes if n not in sim.config.voters]
        writer, reader = learners[0], learners[1]
        w, r = sim.nodes[writer].metadata, sim.nodes[reader].metadata

        async def story() -> tuple[float, float, int, int, object]:
            began = sim.loop.time()
            result = await w.propose(Put("kv/answer", 42))
            assert result.ok, f"seed {SEED}: {result}"
            wrote = sim.loop.time() - began
            await sim.clock.sleep(QUIET_S)
            lag = (w.state.applied_index, r.state.applied_index)
            began = sim.loop.time()
            await r.read_index()
            return wrote, sim.loop.time() - began, *lag, r.state.value("kv/answer")

        wrote, read, writer_at, reader_at, value = sim.run(story())
        assert wrote < FAST_S, f"seed {SEED}: a write through a learner took {wrote:.1f} s"
        # The other learner has not heard of the write (the log waits for its heartbeat)...
        assert reader_at < writer_at, f"seed {SEED}: learners hear every entry at once"
        # ...yet its read is linearizable, and fast.
        assert value == 42, f"seed {SEED}: a read through {reader} missed a committed write"
        assert read < FAST_S, f"seed {SEED}: a read through a learner took {read:.1f} s"


def test_learners_hear_of_a_new_leader_with_its_first_entry() -> None:
    with large() as sim:
        old = sim.leader()
        assert old is not None
        learners = [n for n in sim.nodes if n not in sim.config.voters]
        sim.crash(old)
        sim.run(sim.wait_for(lambda: sim.leader() not in (None, old), 120, "a new leader"))
        new = sim.leader()
        elected = sim.loop.time()

        def told() -> bool:
            return all(sim.nodes[n].metadata.leader == new for n in learners)

        sim.run(sim.wait_for(told, 60, f"every learner told of {new}"))
        assert sim.loop.time() - elected < FAST_S, f"seed {SEED}: learners learnt late"
