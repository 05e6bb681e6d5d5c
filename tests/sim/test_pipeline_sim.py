"""How a simulated leader commits under load: group commit, overlapped fsyncs, timeouts.

The disks here are slow (every fsync takes virtual time), so the order of the driver's
steps shows in the clock: proposals made while an fsync runs share the next one, a
leader's fsync runs while its followers fsync the same entries, and a proposal nobody
can commit fails after ``PROPOSAL_TIMEOUT_S``. The Raft checkers run throughout.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from fabric import limits
from fabric.errors import Timeout
from fabric.metadata.commands import Put
from nodes.simcluster import SimCluster
from tests.sim.conftest import config

FSYNC_S = 0.05
"""Virtual seconds each fsync takes: far more than a message's trip (at most 2 ms)."""
SETTLE_S = 20.0


def _replay(name: str) -> str:
    return f"\n  replay: pytest {__file__} -k {name}"


def _slow_cluster(seed: int) -> tuple[SimCluster, str]:
    """Three voters with slow fsyncs, a leader elected and settled."""
    cfg = config(3)
    sim = SimCluster(dataclasses.replace(cfg, voters=tuple(n.id for n in cfg.nodes)), seed)
    for node_id in sim.disks:
        sim.metadata_disk(node_id).slow(sim.clock, FSYNC_S)
    sim.run(sim.start_all())
    sim.run(sim.wait_for(lambda: sim.leader() is not None, SETTLE_S, "a leader"))
    leader = sim.leader()
    assert leader is not None
    sim.run(sim.nodes[leader].metadata.propose(Put("kv/warm", 0)))
    sim.run(sim.sleep(1.0))  # registrations and health reports settle
    return sim, leader


def test_a_commit_costs_one_fsync_time_not_one_per_node() -> None:
    """The leader sends its appends before its own fsync, and answers from the entries it
    has written: a commit waits for the slowest fsync of a majority, not for the leader's
    and then a follower's one after the other (and no third one for the commit index)."""
    sim, leader = _slow_cluster(seed=41)
    try:
        metadata = sim.nodes[leader].metadata

        async def timed() -> float:
            start = sim.loop.time()
            result = await metadata.propose(Put("kv/k", 1))
            assert result.ok, result
            return sim.loop.time() - start

        took_s = sim.run(timed())
        assert took_s < 1.5 * FSYNC_S, f"a commit took {took_s * 1000:.0f} ms"
    except AssertionError as exc:
        pytest.fail(f"{exc}{_replay('one_fsync')}", pytrace=False)
    finally:
        sim.close()


def test_proposals_made_during_an_fsync_share_the_next_one() -> None:
    """Group commit: a burst of proposals costs the leader a couple of fsyncs, not one
    each."""
    burst = 200
    sim, leader = _slow_cluster(seed=42)
    try:
        metadata = sim.nodes[leader].metadata
        syncs = metadata.wal_syncs

        async def burst_of_proposals() -> None:
            results = await asyncio.gather(
                *(metadata.propose(Put(f"kv/b{i}", i)) for i in range(burst))
            )
            assert all(r.ok for r in results), results

        sim.run(burst_of_proposals())
        assert metadata.wal_syncs - syncs <= 3, f"{metadata.wal_syncs - syncs} fsyncs"
    except AssertionError as exc:
        pytest.fail(f"{exc}{_replay('share')}", pytrace=False)
    finally:
        sim.close()


def test_a_proposal_nobody_can_commit_times_out() -> None:
    """A leader cut off from both followers cannot commit: its proposer hears Timeout once
    ``PROPOSAL_TIMEOUT_S`` passed (within a tick), and nothing stays pending."""
    sim, leader = _slow_cluster(seed=43)
    try:
        metadata = sim.nodes[leader].metadata
        sim.net.isolate(leader, sorted(sim.nodes))

        async def stranded() -> float:
            start = sim.loop.time()
            bound_s = limits.PROPOSAL_TIMEOUT_S + 1.0  # a builtin TimeoutError: no answer
            with pytest.raises(Timeout):
                await asyncio.wait_for(metadata.propose(Put("kv/stranded", 1)), bound_s)
            return sim.loop.time() - start

        took_s = sim.run(stranded())
        tick_s = sim.config.timeouts.tick_ms / 1000
        assert limits.PROPOSAL_TIMEOUT_S <= took_s <= limits.PROPOSAL_TIMEOUT_S + 2 * tick_s, (
            f"timed out after {took_s:.2f} s"
        )
        assert not metadata._proposals, "a timed-out proposal is still pending"
    except AssertionError as exc:
        pytest.fail(f"{exc}{_replay('times_out')}", pytrace=False)
    finally:
        sim.close()
