"""The history checkers can fail: a node broken on purpose makes ``check_blocks`` report
the acknowledged write it lost, and the same run on honest nodes passes.

A client writes whole 1 MiB blocks of a vdisk through random nodes of a simulated
five-node RF2 cluster and reads each block back through another node, recording every
operation as the runner's history would (``fabric.history.Op``, virtual seconds). Now and
then the node that has just answered a write loses power at once (a kill landing right
after an acknowledgement, the moment durability promises are for) and restarts. With
``[debug] ack_before_commit`` the write coordinator answers before the metadata of the
write commits: the crash takes the commit with it, the block reads back as its older
value, and the checker names the lost write. Replay with ``CHECKERS_SEED=<seed>``.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest
import xxhash

from fabric.checkers import check_blocks
from fabric.config import DebugSettings
from fabric.errors import FabricError
from fabric.extents.policy import ContainerPolicy
from fabric.history import Op
from fabric.ports import PeerUnreachable
from nodes.simcluster import SimCluster
from tests.sim.conftest import chunks, started

MiB = 1 << 20
ZEROS = bytes(MiB)
BLOCKS = 6
STEPS = 16
CRASH_AFTER_ACK = 0.35
"""How often the node that answered a write loses power right after its answer."""
OP_DEADLINE_S = 60.0
SEEDS = (
    [int(os.environ["CHECKERS_SEED"])]
    if "CHECKERS_SEED" in os.environ
    else list(range(int(os.environ.get("CHECKERS_SEEDS", "3"))))
)
SIM_SEED_BASE = 700


def digest(data: bytes) -> str:
    return "zero" if data == ZEROS else xxhash.xxh3_64_hexdigest(data)


class Client:
    """Runs operations against the simulated cluster and records them."""

    def __init__(self, sim: SimCluster) -> None:
        self.sim = sim
        self.start = sim.loop.time()
        self.ops: list[Op] = []

    def now(self) -> float:
        return self.sim.loop.time() - self.start

    async def write(self, process: int, via: str, block: int, data: bytes) -> bool:
        invoke = self.now()
        writer = self.sim.nodes[via].writer
        try:
            await asyncio.wait_for(writer.write("v", block * MiB, MiB, chunks(data)), OP_DEADLINE_S)
            outcome, error = "ok", ""
        except (FabricError, PeerUnreachable, TimeoutError) as exc:
            # No answer we can trust: the write may or may not have landed.
            outcome, error = "unknown", f"{type(exc).__name__}: {exc}"
        key = f"v/{block}"
        self.ops.append(
            Op(
                process,
                "write",
                key,
                digest(data),
                invoke,
                self.now(),
                outcome,
                error,
                {"node": via},
            )
        )
        return outcome == "ok"

    async def read(self, process: int, via: str, block: int) -> None:
        invoke = self.now()
        try:
            got = await asyncio.wait_for(self._read(via, block), OP_DEADLINE_S)
        except (FabricError, PeerUnreachable, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.ops.append(
                Op(process, "read", f"v/{block}", None, invoke, self.now(), "fail", error)
            )
            return
        op = Op(
            process, "read", f"v/{block}", digest(got), invoke, self.now(), "ok", "", {"node": via}
        )
        self.ops.append(op)

    async def _read(self, via: str, block: int) -> bytes:
        _, _, stream = await self.sim.nodes[via].reader.read("v", block * MiB, MiB)
        return b"".join([c async for c in stream])


async def workload(sim: SimCluster, rng: random.Random) -> list[Op]:
    g = sim.nodes["n1"]
    await g.catalog.create_container("c", ContainerPolicy(rf=2))
    await g.catalog.create_vdisk("v", "c", BLOCKS * MiB)
    client = Client(sim)
    for _ in range(STEPS):
        block = rng.randrange(BLOCKS)
        via = rng.choice(sorted(sim.nodes))
        acked = await client.write(0, via, block, rng.randbytes(MiB))
        if acked and rng.random() < CRASH_AFTER_ACK:
            sim.crash(via)  # before anything else runs on it
            await sim.restart(via)
        reader = rng.choice(sorted(set(sim.nodes) - {via}))
        await client.read(1, reader, block)
        await sim.sleep(0.2)
    for block in range(BLOCKS):
        await client.read(1, rng.choice(sorted(sim.nodes)), block)
    return client.ops


def run(seed: int, broken: bool) -> list[Op]:
    sim = started(5, SIM_SEED_BASE + seed, debug=DebugSettings(ack_before_commit=broken))
    try:
        return sim.run(workload(sim, random.Random(seed)))
    finally:
        sim.close()


def _replay(seed: int) -> str:
    return f"seed {seed} (simulation seed {SIM_SEED_BASE + seed}); replay: CHECKERS_SEED={seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_honest_nodes_pass_the_block_checker(seed: int) -> None:
    ops = run(seed, broken=False)
    verdict = check_blocks(ops)
    assert verdict.ok, f"{_replay(seed)}: {verdict.detail}"
    acked = sum(1 for op in ops if op.kind == "write" and op.outcome == "ok")
    assert acked and verdict.stats["reads_checked"], f"{_replay(seed)}: nothing was checked"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_node_that_acks_before_commit_fails_the_block_checker(seed: int) -> None:
    ops = run(seed, broken=True)
    verdict = check_blocks(ops)
    assert not verdict.ok, f"{_replay(seed)}: the broken node lost nothing: {verdict.stats}"
    assert verdict.stats["lost_writes"] >= 1, f"{_replay(seed)}: {verdict.detail}"
    lost = verdict.culprit
    assert lost is not None and lost.kind == "write" and lost.outcome == "ok", _replay(seed)
    assert "acknowledged write lost" in verdict.detail
