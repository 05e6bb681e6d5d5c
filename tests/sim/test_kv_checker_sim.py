"""The kv linearizability checker can fail: nodes that answer reads from their own state
without asking the leader (``[debug] stale_reads``) serve a value older than a write that
completed before the read began, and ``check_linearizable_kv`` names that read; honest
nodes refuse the read instead (no leader answers it) and the history passes.

Story, on a simulated 5-node cluster: clients write a key through the leader and read it
through every node; partway, one follower is cut off from the others; writes go on
through the majority; the clients keep reading through the cut-off follower too. Replay
with ``KV_CHECKER_SEED=<seed>``.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from fabric.checkers import check_linearizable_kv
from fabric.config import DebugSettings
from fabric.errors import FabricError
from fabric.history import Op
from fabric.metadata.commands import Put
from fabric.ports import PeerUnreachable
from nodes.simcluster import SimCluster
from tests.sim.conftest import started

KEY = "kv/x"
STEPS = 12
OP_DEADLINE_S = 15.0
SEEDS = (
    [int(os.environ["KV_CHECKER_SEED"])]
    if "KV_CHECKER_SEED" in os.environ
    else list(range(int(os.environ.get("KV_CHECKER_SEEDS", "2"))))
)
SIM_SEED_BASE = 900


def _replay(seed: int) -> str:
    return f"seed {seed} (simulation seed {SIM_SEED_BASE + seed}); replay: KV_CHECKER_SEED={seed}"


class Client:
    def __init__(self, sim: SimCluster) -> None:
        self.sim = sim
        self.start = sim.loop.time()
        self.ops: list[Op] = []

    def now(self) -> float:
        return self.sim.loop.time() - self.start

    async def write(self, via: str, value: int) -> None:
        invoke = self.now()
        try:
            result = await asyncio.wait_for(
                self.sim.nodes[via].metadata.propose(Put(KEY, value)), OP_DEADLINE_S
            )
            outcome = "ok" if result.ok else "fail"
        except (FabricError, PeerUnreachable, TimeoutError):
            outcome = "unknown"
        self.ops.append(Op(0, "kv-write", KEY, value, invoke, self.now(), outcome))

    async def read(self, process: int, via: str) -> None:
        invoke = self.now()
        meta = self.sim.nodes[via].metadata
        try:
            await asyncio.wait_for(meta.read_index(), OP_DEADLINE_S)
        except (FabricError, PeerUnreachable, TimeoutError):
            self.ops.append(Op(process, "kv-read", KEY, None, invoke, self.now(), "fail"))
            return
        item = meta.state.get(KEY)
        value = None if item is None else item.value
        self.ops.append(
            Op(process, "kv-read", KEY, value, invoke, self.now(), "ok", "", {"node": via})
        )


def run(seed: int, broken: bool) -> list[Op]:
    sim = started(5, SIM_SEED_BASE + seed, debug=DebugSettings(stale_reads=broken))
    rng = random.Random(seed)
    try:

        async def story() -> list[Op]:
            client = Client(sim)
            leader = sim.leader()
            assert leader is not None
            followers = sorted(set(sim.nodes) - {leader})
            cut = rng.choice(followers)
            for step in range(STEPS):
                if step == STEPS // 3:
                    sim.net.isolate(cut, sorted(sim.nodes))
                await client.write(leader, step)
                await client.read(1, cut if step >= STEPS // 3 else rng.choice(followers))
                await client.read(2, rng.choice(sorted(set(sim.nodes) - {cut})))
            sim.net.heal()
            return client.ops

        return sim.run(story())
    finally:
        sim.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_honest_nodes_give_a_linearizable_kv_history(seed: int) -> None:
    ops = run(seed, broken=False)
    verdict = check_linearizable_kv(ops)
    assert verdict.ok, f"{_replay(seed)}: {verdict.detail}"
    reads = [op for op in ops if op.kind == "kv-read"]
    assert any(op.outcome == "fail" for op in reads), f"{_replay(seed)}: the cut-off node answered"
    assert sum(op.outcome == "ok" for op in reads) > STEPS, _replay(seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_nodes_that_read_without_the_leader_fail_the_kv_checker(seed: int) -> None:
    ops = run(seed, broken=True)
    verdict = check_linearizable_kv(ops)
    assert not verdict.ok, f"{_replay(seed)}: stale reads went unnoticed: {verdict.stats}"
    culprit = verdict.culprit
    assert culprit is not None and culprit.kind == "kv-read", f"{_replay(seed)}: {verdict.detail}"
