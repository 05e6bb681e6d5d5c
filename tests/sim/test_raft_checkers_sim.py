"""Every Raft checker a simulated cluster runs fires on the bug it guards against.

Each test breaks the real node code one way (with monkeypatch), drives a small cluster
into the situation where the bug matters, and expects the violation from ``sim.run``.
The same story without the bug must run clean: the checker fires because of the bug,
not because of the story.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from fabric.consensus.types import Entry, Ready
from fabric.metadata.commands import Put
from fabric.sim.checkers import SafetyViolation
from nodes.services.metadata import MetadataService
from nodes.simcluster import DIGEST_EVERY_ENTRIES, SimCluster, digest_stride
from tests.sim.conftest import config

SETTLE_S = 20.0
"""Virtual seconds an election or a commit may take in these stories."""


def _replay(name: str) -> str:
    return f"\n  replay: pytest {__file__} -k {name}"


def _leader(sim: SimCluster, among: set[str]) -> str | None:
    leader = sim.leader()
    return leader if leader in among else None


def _running(seed: int, voters: int) -> SimCluster:
    cfg = config(5)
    cfg = dataclasses.replace(cfg, voters=tuple(n.id for n in cfg.nodes[:voters]))
    sim = SimCluster(cfg, seed)
    sim.run(sim.start_all())
    sim.run(sim.wait_for(lambda: sim.leader() is not None, SETTLE_S, "a first leader"))
    return sim


@pytest.fixture(params=[False, True], ids=["correct", "mutated"])
def mutated(request: pytest.FixtureRequest) -> Iterator[bool]:
    yield bool(request.param)


# --- vote durability ---------------------------------------------------------------------------
def test_a_vote_forgotten_in_a_crash_is_seen_granted_twice(
    mutated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five voters. The leader is cut off; the other four elect one of them, the three
    voters that voted lose power and come back cut off from both leaders. They elect one
    of themselves: a node that forgot its vote grants a second one in the same term."""
    sim = _running(seed=31, voters=5)
    try:
        old = sim.leader()
        assert old is not None
        if mutated:
            real = MetadataService._persist

            async def forget_votes(self: MetadataService, rd: Ready) -> None:
                await real(self, dataclasses.replace(rd, hard_state=None))

            monkeypatch.setattr(MetadataService, "_persist", forget_votes)
        ids = sorted(sim.nodes)
        sim.net.isolate(old, ids)
        others = set(ids) - {old}
        sim.run(sim.wait_for(lambda: _leader(sim, others) is not None, SETTLE_S, "a new leader"))
        new = sim.leader()
        assert new is not None
        voters = sorted(others - {new})
        for node in voters:
            sim.crash(node)
        sim.net.partition([old], [new], voters)
        for node in voters:
            sim.run(sim.restart(node))
        if mutated:
            with pytest.raises(SafetyViolation, match=r"voted twice in term \d+"):
                sim.run(sim.wait_for(lambda: False, SETTLE_S, "a double vote"))
        else:
            elected = lambda: _leader(sim, set(voters)) is not None  # noqa: E731
            sim.run(sim.wait_for(elected, SETTLE_S, "a leader among the restarted voters"))
    except AssertionError as exc:
        pytest.fail(f"{exc}{_replay('forgotten')}", pytrace=False)
    finally:
        sim.close()


# --- leader completeness -----------------------------------------------------------------------
def test_a_leader_whose_log_is_not_durable_is_seen_incomplete(
    mutated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three voters. One follower acknowledges entries without writing them; the other
    is cut off while entries commit, so when the leader goes, only the first can win.
    Its durable log lacks committed entries."""
    sim = _running(seed=32, voters=3)
    try:
        leader = sim.leader()
        assert leader is not None
        followers = [v for v in sim.config.voters if v != leader]
        careless, behind = followers
        if mutated:
            real = MetadataService._persist

            async def drop_entries(self: MetadataService, rd: Ready) -> None:
                if self.node_id == careless:
                    rd = dataclasses.replace(rd, entries=[])
                await real(self, rd)

            monkeypatch.setattr(MetadataService, "_persist", drop_entries)
        ids = sorted(sim.nodes)
        sim.net.isolate(behind, ids)

        async def commit() -> None:
            for i in range(5):
                result = await sim.nodes[leader].metadata.propose(Put(f"kv/k{i}", i))
                assert result.ok, result

        sim.run(commit())
        sim.net.heal()
        sim.net.isolate(leader, ids)
        if mutated:
            with pytest.raises(SafetyViolation, match=f"leader completeness: {careless}"):
                sim.run(sim.wait_for(lambda: False, SETTLE_S, "a new leader"))
        else:
            sim.run(sim.wait_for(lambda: sim.leader() == careless, SETTLE_S, "a new leader"))
    except AssertionError as exc:
        pytest.fail(f"{exc}{_replay('durable')}", pytrace=False)
    finally:
        sim.close()


# --- pipelining: only a leader's appends leave before the write ------------------------------
def test_an_acknowledgement_sent_before_its_fsync_is_seen(
    mutated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three voters; one follower's fsync is slow, the other is cut off. A leader sends its
    appends before its own write, but a follower must not acknowledge before its fsync: a
    driver that sends every message early lets the leader commit an entry the slow
    follower then loses in a crash, and the next leader's log lacks it."""
    sim = _running(seed=34, voters=3)
    try:
        leader = sim.leader()
        assert leader is not None
        slow, away = (v for v in sim.config.voters if v != leader)
        sim.metadata_disk(slow).slow(sim.clock, 1.0)
        if mutated:
            real = MetadataService._handle

            async def everything_early(self: MetadataService, rd: Ready) -> None:
                early = [*rd.early_messages, *rd.messages]
                await real(self, dataclasses.replace(rd, early_messages=early, messages=[]))

            monkeypatch.setattr(MetadataService, "_handle", everything_early)
        ids = sorted(sim.nodes)
        sim.net.isolate(away, ids)
        proposal = sim.loop.create_task(sim.nodes[leader].metadata.propose(Put("kv/k", 1)))
        sim.run(sim.sleep(0.5))  # the slow follower's fsync is still running
        assert proposal.done() == mutated, "committed before a majority fsynced it"
        sim.crash(slow)
        sim.crash(leader)
        sim.metadata_disk(slow).slow(sim.clock, 0.0)  # a new disk: elections in time
        sim.net.heal()
        sim.run(sim.restart(slow))
        others = {slow, away}
        if mutated:
            with pytest.raises(SafetyViolation, match=f"leader completeness: ({slow}|{away})"):
                sim.run(sim.wait_for(lambda: False, SETTLE_S, "a new leader"))
        else:
            elected = lambda: _leader(sim, others) is not None  # noqa: E731
            sim.run(sim.wait_for(elected, SETTLE_S, "a new leader"))
    except AssertionError as exc:
        pytest.fail(f"{exc}{_replay('fsync')}", pytrace=False)
    finally:
        sim.close()


# --- state digests -----------------------------------------------------------------------------
def test_a_state_machine_that_diverges_is_seen_by_its_digest(
    mutated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One node's state machine changes something no command said (a nondeterministic
    apply, say): its state digest stops matching the others' at the next sampled index."""
    sim = _running(seed=33, voters=3)
    try:
        if mutated:
            real = MetadataService._apply

            def apply_and_drift(self: MetadataService, entry: Entry) -> None:
                real(self, entry)
                if self.node_id == "n4":
                    self.state.put(entry.index, "kv/drift", entry.index)

            monkeypatch.setattr(MetadataService, "_apply", apply_and_drift)
        leader = sim.leader()
        assert leader is not None

        async def commit() -> None:
            for i in range(2 * DIGEST_EVERY_ENTRIES + 2):
                result = await sim.nodes[leader].metadata.propose(Put(f"kv/k{i}", i))
                assert result.ok, result
            for node in sim.nodes.values():
                await node.metadata.read_index()

        if mutated:
            with pytest.raises(SafetyViolation, match=r"state diverged at index \d+: .*n4 has"):
                sim.run(commit())
        else:
            sim.run(commit())
    except AssertionError as exc:
        pytest.fail(f"{exc}{_replay('diverges')}", pytrace=False)
    finally:
        sim.close()


def test_digested_indexes_thin_out_as_the_log_grows_but_never_stop() -> None:
    every = DIGEST_EVERY_ENTRIES
    digested = [i for i in range(1, 1 << 16) if i % digest_stride(i, every) == 0]
    early = [i for i in digested if i < 256]
    assert early == list(range(every, 256, every))  # a short run is checked as before
    for octave in range(10, 16):  # then about 64 digests in each doubling of the log
        inside = [i for i in digested if 1 << (octave - 1) <= i < 1 << octave]
        assert 32 <= len(inside) <= 80, (octave, len(inside))
