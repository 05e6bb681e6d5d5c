"""No background task of a node dies silently: the cluster heals, or says who cannot.

Stories, each over several seeds on the deterministic simulator:

* a leader is cut off while it builds its own health report and is deposed before it
  hands the report over (issue 8, liveness bug 1: the report task died and the node
  stayed DOWN for good after it came back);
* a task stops on an operating fault and is started again; a task hits a bug and
  the node leaves service, says why, and the others carry on without it;
* the disk under a node's Raft WAL fills up (bug 3: the Raft driver died while the
  node kept reporting UP): the node is reported out of service with the reason, the
  others keep committing, and once space returns it catches up and is UP again;
* at unit level, a node whose WAL cannot be written sends nothing of that Ready until
  the write succeeds.

A failure prints its seed; replay one run with
``SIM_SEED=<seed> pytest tests/sim/test_liveness_sim.py``.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from fabric.consensus.types import Role, VoteRequest, VoteResponse
from fabric.consensus.wal import decode_wal
from fabric.errors import Unavailable
from fabric.metadata.commands import Put
from fabric.metadata.records import NodeRecord
from fabric.ports import DiskFault, PeerUnreachable
from fabric.sim.disk import SimDisk
from fabric.sim.loop import SimClock, VirtualLoop
from nodes.node import Node
from nodes.services.metadata import WAL, MetadataService
from nodes.simcluster import SimCluster
from tests.sim.conftest import config, started

SEEDS = (
    [int(os.environ["SIM_SEED"])]
    if "SIM_SEED" in os.environ
    else list(range(int(os.environ.get("LIVENESS_SEEDS", "10"))))
)
HEAL_DEADLINE_S = 20.0
"""Virtual seconds a healed cluster gets to show every node UP again."""


def with_seed(seed: int, exc: AssertionError) -> str:
    said = str(exc)
    head = "" if said.startswith(f"seed {seed}:") else f"seed {seed}: "
    return f"{head}{said} (replay: SIM_SEED={seed} pytest tests/sim/test_liveness_sim.py)"


def run_story(seed: int, story: Callable[[SimCluster], Coroutine[Any, Any, None]]) -> None:
    sim = started(seed=seed)
    try:
        sim.run(story(sim))
    except AssertionError as exc:
        raise AssertionError(with_seed(seed, exc)) from exc
    finally:
        sim.close()


def records(node: Node) -> dict[str, NodeRecord]:
    return node.metadata.state.nodes()


def state_of(sim: SimCluster, node_id: str) -> tuple[str, str]:
    """``node_id``'s (state, reason) as the current leader has recorded it."""
    leader = sim.leader()
    if leader is None:
        return "", ""
    record = records(sim.nodes[leader]).get(node_id)
    return (record.state, record.reason) if record else ("", "")


def all_up(sim: SimCluster) -> bool:
    """Every running node's replicated records show every node of the cluster UP."""
    ids = {n.id for n in sim.config.nodes}
    return all(
        set(records(node)) == ids and all(r.state == "UP" for r in records(node).values())
        for node in sim.nodes.values()
    )


async def commit(sim: SimCluster, via: str, key: str, value: int) -> None:
    result = await sim.nodes[via].metadata.propose(Put(f"kv/{key}", value))
    assert result.ok, f"Put {key} through {via} refused: {result}"


async def in_step(sim: SimCluster, node_id: str, what: str) -> None:
    """Wait until ``node_id`` has applied everything the leader has."""
    node = sim.nodes[node_id]

    def caught_up() -> bool:
        leader = sim.leader()
        return (
            leader is not None
            and node.metadata.state.applied_index >= sim.nodes[leader].metadata.state.applied_index
        )

    await sim.wait_for(caught_up, HEAL_DEADLINE_S, what)


# --- bug 1: a leader deposed while it builds its own health report -----------------------
async def depose_leader_mid_report(sim: SimCluster) -> None:
    old = sim.leader()
    assert old is not None
    node = sim.nodes[old]
    build_report = node.health.local_report
    stalled: list[bool] = []

    async def report_while_cut_off() -> tuple[str, dict[str, Any]]:
        # The leader stalls in the middle of its report (a paused process; in the real
        # runtime the disk stat runs in a thread) while the others depose it and record
        # it DOWN; then the network heals and the report goes on.
        if not stalled and node.metadata.is_leader:
            stalled.append(True)
            sim.net.isolate(old, list(sim.nodes))
            await sim.wait_for(
                lambda: sim.leader() not in (None, old) and state_of(sim, old)[0] == "DOWN",
                30,
                f"a new leader recording {old} DOWN while it is cut off",
            )
            assert not node.metadata.is_leader, "a cut-off leader must step down"
            sim.net.heal()
        return await build_report()

    node.health.local_report = report_while_cut_off
    await sim.wait_for(lambda: bool(stalled), 5, f"{old} building a report as leader")
    await sim.wait_for(
        lambda: sim.net.blocked == set() and all_up(sim),
        HEAL_DEADLINE_S,
        f"every node UP again after the deposed leader {old} came back",
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_leader_deposed_while_building_its_report_comes_back_up(seed: int) -> None:
    run_story(seed, depose_leader_mid_report)


# --- supervision ----------------------------------------------------------------------------
async def report_fails_three_times(sim: SimCluster) -> None:
    victim = next(n for n in sorted(sim.nodes) if n != sim.leader())
    node = sim.nodes[victim]
    build_report = node.health.local_report
    faults = [DiskFault("injected: usage unreadable")] * 2 + [PeerUnreachable("x", "injected")]

    async def flaky_report() -> tuple[str, dict[str, Any]]:
        if faults:
            raise faults.pop()
        return await build_report()

    node.health.local_report = flaky_report
    await sim.wait_for(lambda: not faults, 10, "three reports failing")
    leader = sim.leader()
    assert leader is not None
    since = sim.clock.now()
    await sim.wait_for(
        lambda: sim.nodes[leader].health.last_seen.get(victim, 0.0) > since,
        5,
        f"a report from {victim} after its report task was restarted",
    )
    assert node.restarts.get("health-report") == 3, node.restarts
    assert node.out_of_service is None and node.problems() == []
    await sim.wait_for(lambda: all_up(sim), HEAL_DEADLINE_S, "every node UP")


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_task_stopped_by_an_operating_fault_is_restarted(seed: int) -> None:
    run_story(seed, report_fails_three_times)


async def leader_monitor_hits_a_bug(sim: SimCluster) -> None:
    old = sim.leader()
    assert old is not None
    node = sim.nodes[old]

    async def buggy_transitions() -> None:
        raise RuntimeError("injected bug")

    sent_after: list[Any] = []
    node.health._commit_transitions = buggy_transitions  # type: ignore[method-assign]
    await sim.wait_for(lambda: node.fault is not None, 5, f"{old} out of service")
    assert node.fault is not None and "health-monitor" in node.fault, node.fault
    assert "injected bug" in node.fault
    wal_before = await sim.disks[old][0].read(WAL)
    send = node.transport.send

    def watch_send(peer: str, message: Any) -> None:
        sent_after.append(message)
        send(peer, message)

    node.transport.send = watch_send  # type: ignore[method-assign]
    # The others elect a leader without it and go on committing.
    await sim.wait_for(lambda: sim.leader() not in (None, old), 10, "a leader other than " + old)
    new = sim.leader()
    assert new is not None
    for i in range(3):
        await commit(sim, new, f"after-bug-{i}", i)
    await sim.wait_for(
        lambda: state_of(sim, old) == ("DEGRADED", f"out of service: {node.fault}"),
        10,
        f"{old} recorded DEGRADED with the reason it gave",
    )
    assert node.metadata.raft is not None and node.metadata.raft.role != Role.LEADER
    view = await sim.nodes[new].cluster_view()
    entry = next(n for n in view["nodes"] if n["id"] == old)
    assert entry["state"] == "DEGRADED" and "injected bug" in entry["state_reason"], entry
    with pytest.raises(Unavailable, match="injected bug"):
        node.check_in_service()
    # It took no part in consensus any more: nothing sent, nothing persisted.
    assert sent_after == [], sent_after[:3]
    assert await sim.disks[old][0].read(WAL) == wal_before


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_a_bug_takes_the_node_out_of_service_and_says_why(seed: int) -> None:
    run_story(seed, leader_monitor_hits_a_bug)


async def follower_driver_hits_a_bug(sim: SimCluster) -> None:
    leader = sim.leader()
    assert leader is not None
    victim = next(n for n in sorted(sim.config.voters) if n != leader)
    node = sim.nodes[victim]

    def buggy_hook(index: int, command: Any, result: Any) -> None:
        if isinstance(command, Put) and command.key == "kv/poison":
            raise RuntimeError("injected apply bug")

    node.metadata.on_apply(buggy_hook)
    await commit(sim, leader, "poison", 1)
    await sim.wait_for(lambda: node.fault is not None, 5, f"{victim} out of service")
    assert node.fault is not None and "raft-driver" in node.fault, node.fault
    applied = node.metadata.state.applied_index
    wal_before = await sim.disks[victim][0].read(WAL)
    sent_after: list[Any] = []
    send = node.transport.send

    def watch_send(peer: str, message: Any) -> None:
        sent_after.append(message)
        send(peer, message)

    node.transport.send = watch_send  # type: ignore[method-assign]
    # Two of three voters remain: the cluster goes on committing without it.
    for i in range(3):
        await commit(sim, leader, f"after-bug-{i}", i)
    await sim.wait_for(
        lambda: (
            state_of(sim, victim)[0] == "DEGRADED"
            and "injected apply bug" in state_of(sim, victim)[1]
        ),
        10,
        f"{victim} recorded DEGRADED with the reason it gave",
    )
    assert sent_after == [], sent_after[:3]
    assert node.metadata.state.applied_index == applied
    assert await sim.disks[victim][0].read(WAL) == wal_before


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_a_bug_in_the_raft_driver_halts_the_node_not_the_cluster(seed: int) -> None:
    run_story(seed, follower_driver_hits_a_bug)


# --- bug 3: a full disk under the Raft WAL --------------------------------------------------
async def wal_disk_fills_up(sim: SimCluster, victim: str) -> None:
    node = sim.nodes[victim]
    disk = sim.disks[victim][0]
    disk.full = True
    survivor = next(n for n in sorted(sim.config.voters) if n != victim)
    # A majority of voters remains: the cluster keeps committing without it.
    for i in range(5):
        await commit(sim, survivor, f"while-full-{i}", i)
    await sim.wait_for(
        lambda: (
            sim.leader() not in (None, victim)
            and state_of(sim, victim)[0] == "DEGRADED"
            and "raft WAL cannot be written" in state_of(sim, victim)[1]
            and "no space left on device" in state_of(sim, victim)[1]
        ),
        10,
        f"{victim} recorded DEGRADED with the WAL reason",
    )
    assert node.out_of_service is not None
    assert any(disk.name in p and "no space" in p for p in node.problems()), node.problems()
    with pytest.raises(Unavailable, match="no space left on device"):
        node.check_in_service()
    assert node.metadata.state.applied_index < sim.nodes[survivor].metadata.state.applied_index
    # Space returns: it writes its WAL again, catches up and is UP again.
    disk.full = False
    await in_step(sim, victim, f"{victim} catching up after space returned")
    await commit(sim, victim, "after-full", 1)
    await sim.wait_for(lambda: all_up(sim), HEAL_DEADLINE_S, "every node UP again")
    assert node.out_of_service is None and node.problems() == []
    wal = decode_wal(await disk.read(WAL) or b"")
    assert wal.entries and wal.entries[-1].index >= node.metadata.state.applied_index


async def follower_wal_fills_up(sim: SimCluster) -> None:
    leader = sim.leader()
    follower = next(n for n in sorted(sim.config.voters) if n != leader)
    await wal_disk_fills_up(sim, follower)


async def leader_wal_fills_up(sim: SimCluster) -> None:
    leader = sim.leader()
    assert leader is not None
    await wal_disk_fills_up(sim, leader)


@pytest.mark.parametrize("seed", SEEDS)
def test_follower_with_a_full_wal_disk_is_reported_then_recovers(seed: int) -> None:
    run_story(seed, follower_wal_fills_up)


async def wal_disk_stays_full(sim: SimCluster) -> None:
    """Out of service past ``down_after_ms``, a node is DOWN (so its data is rebuilt),
    though it still reports; UP again once it is back in service."""
    leader = sim.leader()
    victim = next(n for n in sorted(sim.config.voters) if n != leader)
    disk = sim.disks[victim][0]
    disk.full = True
    down_s = sim.config.timeouts.down_after_ms / 1000
    began = sim.clock.now()
    await sim.wait_for(
        lambda: state_of(sim, victim)[0] == "DOWN",
        3 * down_s,
        f"{victim} DOWN after {down_s} s out of service",
    )
    assert sim.clock.now() - began >= down_s
    assert "out of service for" in state_of(sim, victim)[1], state_of(sim, victim)
    assert "no space left on device" in state_of(sim, victim)[1], state_of(sim, victim)
    now_leader = sim.leader()
    assert now_leader is not None
    assert sim.nodes[now_leader].health.last_seen[victim] > began  # it kept reporting
    disk.full = False
    await sim.wait_for(lambda: all_up(sim), HEAL_DEADLINE_S, "every node UP again")


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_a_node_out_of_service_past_the_down_timeout_is_down_until_back(seed: int) -> None:
    run_story(seed, wal_disk_stays_full)


@pytest.mark.parametrize("seed", SEEDS)
def test_leader_with_a_full_wal_disk_is_reported_then_recovers(seed: int) -> None:
    run_story(seed, leader_wal_fills_up)


# --- unit level: no message of a Ready before its state is on disk ------------------------
class RecordingTransport:
    """Raft messages a lone metadata service sends, in order; calls find nobody."""

    def __init__(self, events: list[tuple[str, Any]]) -> None:
        self.events = events

    def send(self, peer: str, message: Any) -> None:
        self.events.append(("send", message))

    async def call(self, peer: str, message: Any, timeout_s: float) -> Any:
        raise PeerUnreachable(peer, "no network in this test")

    def serve(self, *handlers: Any) -> None:
        pass


class JournaledDisk(SimDisk):
    """A simulated disk that also notes each WAL write that succeeded."""

    def __init__(self, name: str, events: list[tuple[str, Any]]) -> None:
        super().__init__(name)
        self.events = events
        self.failures = 0

    async def sync(self, path: str) -> None:
        await super().sync(path)
        self.events.append(("durable", path))

    async def append(self, path: str, data: bytes) -> int:
        try:
            return await super().append(path, data)
        except DiskFault:
            self.failures += 1
            raise

    async def write_atomic(self, path: str, data: bytes) -> None:
        try:
            await super().write_atomic(path, data)
        except DiskFault:
            self.failures += 1
            raise
        self.events.append(("durable", path))


async def campaign_on_a_full_disk(seed: int) -> None:
    cfg = config(3)
    events: list[tuple[str, Any]] = []
    disk = JournaledDisk("n1/disk0", events)
    clock = SimClock()
    meta = MetadataService(
        "n1",
        cfg,
        clock,
        random.Random(seed),
        RecordingTransport(events),
        disk,  # type: ignore[arg-type]
    )
    await meta.open()
    tasks = [asyncio.create_task(meta.run()), asyncio.create_task(meta.tick_forever())]
    try:
        while not any(isinstance(m, VoteRequest) and m.pre_vote for _, m in events):
            await clock.sleep(0.01)
        raft = meta.raft
        assert raft is not None and raft.term == 0
        disk.full = True
        sent_before = len([e for e in events if e[0] == "send"])
        # n2 grants the pre-vote: n1 becomes a candidate at term 1 and votes for itself.
        # That vote must reach the WAL before any VoteRequest leaves.
        meta.step(VoteResponse(1, "n2", "n1", granted=True, pre_vote=True))
        await clock.sleep(3.0)
        assert raft.term >= 1 and raft.status()["vote"] == "n1", raft.status()
        assert len([e for e in events if e[0] == "send"]) == sent_before, (
            "a message left while the WAL could not be written"
        )
        assert disk.failures > 1, "the WAL write is retried"
        assert meta.wal_fault is not None and "no space left on device" in meta.wal_fault
        assert decode_wal(await disk.read(WAL) or b"").hard_state.term == 0
        disk.full = False
        deadline = clock.now() + 5.0
        while not any(isinstance(m, VoteRequest) and not m.pre_vote for _, m in events):
            assert clock.now() < deadline, "no vote request after space returned"
            await clock.sleep(0.01)
        assert meta.wal_fault is None
        first_vote = next(
            i for i, (_, m) in enumerate(events) if isinstance(m, VoteRequest) and not m.pre_vote
        )
        assert ("durable", WAL) in events[sent_before:first_vote], events[sent_before:first_vote]
        hard_state = decode_wal(await disk.read(WAL) or b"").hard_state
        assert hard_state.term >= 1 and hard_state.vote == "n1", hard_state
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_no_message_leaves_before_its_ready_is_persisted(seed: int) -> None:
    loop = VirtualLoop()
    try:
        loop.run_until_complete(campaign_on_a_full_disk(seed))
    except AssertionError as exc:
        raise AssertionError(with_seed(seed, exc)) from exc
    finally:
        loop.close()
