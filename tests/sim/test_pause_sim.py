"""``node-pause`` in the simulator: one node stops (SIGSTOP) while the others run.

A paused node keeps its memory and runs nothing: no tick, no health report, no answer;
what is sent to it waits. The cluster must carry on without it (a paused leader is
replaced), and once resumed the node must catch up and rejoin, its Raft safe throughout
(every cluster here runs the simulator's Raft checkers). The gate itself is tested on a
bare ``VirtualLoop``; a scenario shows the fault end to end through ``fabric sim``.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from pathlib import Path

from fabric.metadata.commands import Put
from fabric.ports import NODE_ID
from fabric.sim.loop import VirtualLoop
from shell.sim import runner
from tests.sim.conftest import started

SEED = 5


def test_a_paused_nodes_callbacks_wait_in_order_and_the_others_run() -> None:
    loop = VirtualLoop()
    loop.pausable = True
    ran: list[str] = []

    def as_node(node: str) -> contextvars.Context:
        ctx = contextvars.copy_context()
        ctx.run(NODE_ID.set, node)
        return ctx

    async def go() -> None:
        loop.pause("a")
        for i in range(3):
            loop.call_soon(ran.append, f"a{i}", context=as_node("a"))
            loop.call_soon(ran.append, f"b{i}", context=as_node("b"))
        loop.call_later(0.5, ran.append, "a-timer", context=as_node("a"))
        loop.call_soon(ran.append, "runner")  # no node: never gated
        later: asyncio.Future[None] = loop.create_future()
        loop.call_later(1.0, later.set_result, None)
        await later
        assert ran == ["b0", "b1", "b2", "runner"]
        loop.hold("a", lambda: ran.append("a-message"))
        loop.resume("a")
        soon: asyncio.Future[None] = loop.create_future()
        loop.call_soon(soon.set_result, None)
        await soon
        assert ran[4:] == ["a0", "a1", "a2", "a-timer", "a-message"]

    try:
        loop.run_until_complete(go())
    finally:
        loop.close()


def test_a_paused_leader_is_replaced_and_rejoins_as_follower_once_resumed() -> None:
    sim = started(seed=SEED, faults=True)
    try:
        old = sim.leader()
        assert old is not None
        paused = sim.nodes[old].metadata
        term, applied = paused.raft.term, paused.state.applied_index  # type: ignore[union-attr]
        sim.pause(old)

        async def while_paused() -> None:
            await sim.wait_for(
                lambda: sim.leader() not in (None, old), 30, f"seed {SEED}: a leader besides {old}"
            )
            new = sim.leader()
            assert new is not None
            for i in range(5):
                result = await sim.nodes[new].metadata.propose(Put(f"kv/k{i}", i))
                assert result.ok, f"seed {SEED}: {result}"
            await sim.sleep(5.0)

        sim.run(while_paused())
        # Stopped, it moved on no clock: same term, nothing applied, still "leading".
        assert paused.raft.term == term, f"seed {SEED}: a paused node's term moved"  # type: ignore[union-attr]
        assert paused.state.applied_index == applied, f"seed {SEED}: it applied while paused"
        assert paused.is_leader, f"seed {SEED}: no check-quorum tick ran, yet it stepped down"
        assert old in sim.paused()
        sim.resume(old)
        leader = sim.leader()
        assert leader is not None and leader != old
        target = sim.nodes[leader].metadata.state.applied_index
        sim.run(
            sim.wait_for(
                lambda: paused.state.applied_index >= target and not paused.is_leader,
                30,
                f"seed {SEED}: the resumed node catching up as a follower",
            )
        )
        assert not sim.paused()
    finally:
        sim.close()


def test_a_node_killed_while_paused_restarts_from_its_disks() -> None:
    sim = started(seed=SEED, faults=True)
    try:
        follower = next(n for n in sim.nodes if n != sim.leader() and n not in sim.config.voters)
        sim.pause(follower)
        sim.run(sim.sleep(2.0))
        sim.crash(follower)  # a paused process can still be killed
        assert follower not in sim.paused()
        node = sim.run(sim.restart(follower))
        sim.run(sim.wait_for(lambda: node.registered, 30, f"seed {SEED}: {follower} back"))
    finally:
        sim.close()


PAUSE = """
name = "pause"
duration_s = 30

[cluster]
nodes = 5
voters = 3

[[containers]]
name = "bench"
rf = 2

[[workloads]]
kind = "kv-cas"
rate = 2

[[workloads]]
kind = "vdisk-writer"
container = "bench"
vdisk_bytes = 4194304

[[faults.at]]
at_s = 3
kind = "node-pause"
target = { nodes = ["n4"] }
duration_s = 8

[[faults.at]]
at_s = 14
kind = "node-pause"
target = { nodes = ["n5"] }

[[faults.at]]
at_s = 22
kind = "node-resume"
target = { nodes = ["n5"] }
"""


def test_fabric_sim_pauses_and_resumes_nodes_and_the_checks_hold(tmp_path: Path) -> None:
    """A pause with a duration ends by itself; one without ends at ``node-resume``. Each
    paused node is declared DOWN by its silence and comes back UP."""
    path = tmp_path / "pause.toml"
    path.write_text(PAUSE)
    result = runner.run(str(path), SEED, str(tmp_path / "out"))
    summary = json.loads(Path(result.out, "summary.json").read_text())
    assert result.code == 0, f"seed {SEED}: {summary['checks']}"
    states = summary["observed"]["node_states"]
    for node in ("n4", "n5"):
        assert "DOWN" in states[node], f"seed {SEED}: {states}"
    lines = Path(result.out, "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    back = [e for e in events if e["kind"] == "node_state" and "-> UP" in e["message"]]
    assert {e["node"] for e in back} >= {"n4", "n5"}, f"seed {SEED}: {back}"
