"""Hundreds of seeded simulated clusters under faults: Raft's safety never breaks.

Each seed runs the real node code (metadata service, health, Raft) for five nodes on
virtual time, while a random fault schedule crashes and restarts nodes (power loss:
unsynced log appends vanish), partitions the network, and drops messages, and clients
write through random nodes. The cluster's ``RaftChecker`` watches every leader, vote,
applied entry and sampled state digest as it happens (see ``nodes.simcluster``). At the
end everything heals and the cluster must elect a leader, commit, and hold, for every
key, the value of its last acknowledged write or of a write that may have come after it.

A failure prints its seed; replay exactly that run with
``SIM_SEED=<seed> pytest tests/sim/test_metadata_sim.py``.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass

import pytest
import xxhash

from fabric.config import ClusterConfig, default_config_text, parse_config
from fabric.errors import FabricError
from fabric.metadata.commands import Command, Put
from fabric.metadata.state import Result
from nodes.services.metadata import MetadataService
from nodes.simcluster import SimCluster

SEEDS = (
    [int(os.environ["SIM_SEED"])]
    if "SIM_SEED" in os.environ
    else list(range(int(os.environ.get("SIM_SEEDS", "200"))))
)
STEPS = 40
STEP_S = 0.25


def config() -> ClusterConfig:
    return parse_config(default_config_text())


@dataclass(frozen=True, slots=True)
class Write:
    key: str
    value: int
    start: float
    end: float
    """When the client heard back: acknowledged, or failed (then in doubt)."""
    acked: bool


async def _write(sim: SimCluster, via: str, key: str, value: int, log: list[Write]) -> None:
    node = sim.nodes.get(via)
    if node is None:
        return
    start = sim.loop.time()
    try:
        acked = (await node.metadata.propose(Put(key, value))).ok
    except FabricError:
        acked = False  # the client would retry; the write may or may not have landed
    log.append(Write(key, value, start, sim.loop.time(), acked))


def allowed_values(writes: list[Write]) -> set[int | None]:
    """What a key may hold at the end: the value of any write not followed by an
    acknowledged write that began after it ended (None: the key is absent).

    A failed write's command was proposed, if at all, before the failure reached the
    client, and Raft commits in log order; so it may land after any write that
    overlapped it, but never after one that began once it had failed."""
    acked = [w for w in writes if w.acked]
    out: set[int | None] = {w.value for w in writes if not any(a.start > w.end for a in acked)}
    if not acked:
        out.add(None)
    return out


async def scenario(sim: SimCluster, rng: random.Random) -> list[Write]:
    ids = [n.id for n in sim.config.nodes]
    log: list[Write] = []
    writers: list[asyncio.Task[None]] = []
    for step in range(STEPS):
        roll = rng.random()
        running = sorted(sim.nodes)
        down = sorted(set(ids) - set(running))
        if roll < 0.12 and len(down) < 2:
            sim.crash(rng.choice(running))
        elif roll < 0.24 and down:
            await sim.restart(rng.choice(down))
        elif roll < 0.32:
            cut = rng.sample(ids, rng.randint(1, 2))
            sim.net.partition(cut, [i for i in ids if i not in cut])
        elif roll < 0.40:
            sim.net.heal()
        elif roll < 0.48:
            sim.net.loss = rng.choice((0.0, 0.05, 0.2))
        for _ in range(rng.randint(0, 3)):
            key = f"kv/k{rng.randrange(20)}"
            via = rng.choice(sorted(sim.nodes))
            writers.append(asyncio.create_task(_write(sim, via, key, step, log)))
        await sim.sleep(STEP_S)  # the workload's pacing
    # Heal everything: the cluster must recover and keep what it acknowledged.
    sim.net.heal()
    sim.net.loss = 0.0
    for node_id in sorted(set(ids) - set(sim.nodes)):
        await sim.restart(node_id)
    await asyncio.gather(*writers)
    return log


def check_recovered(sim: SimCluster, log: list[Write]) -> None:
    async def final() -> None:
        await sim.wait_for(lambda: sim.leader() is not None, 20, "a leader after healing")
        probe = sim.nodes[sorted(sim.nodes)[0]]
        result = await probe.metadata.propose(Put("kv/final", 1))
        assert result.ok, f"seed {sim.seed}: commit after healing failed: {result}"
        for node in sim.nodes.values():
            await node.metadata.read_index()
            await node.metadata.wait_applied(result.value)
        # Health changes may still be committing: compare states once every node has
        # applied the same prefix of the log.
        await sim.wait_for(
            lambda: len({n.metadata.state.applied_index for n in sim.nodes.values()}) == 1,
            20,
            "every node at the same applied index",
        )
        states = {nid: n.metadata.state for nid, n in sim.nodes.items()}
        by_key: dict[str, list[Write]] = {}
        for w in log:
            by_key.setdefault(w.key, []).append(w)
        for key, writes in sorted(by_key.items()):
            allowed = allowed_values(writes)
            for nid, state in sorted(states.items()):
                item = state.get(key)
                got = None if item is None else item.value
                assert got in allowed, (
                    f"seed {sim.seed}: {key} on {nid} holds {got}, allowed "
                    f"{sorted(map(str, allowed))}; acknowledged writes (value, start, end): "
                    f"{[(w.value, w.start, w.end) for w in writes if w.acked]}"
                )
        # Every node must hold the very same state.
        digests = {
            nid: xxhash.xxh3_64_hexdigest(_canonical(s))
            for nid, s in states.items()
            if s.applied_index >= result.value
        }
        assert len(set(digests.values())) == 1, f"seed {sim.seed}: states differ {digests}"

    sim.run(final())


def _canonical(state: object) -> bytes:
    from fabric.metadata.state import MetadataState

    assert isinstance(state, MetadataState)
    snap = MetadataState.restore(state.snapshot())
    snap.applied_index = 0
    return snap.snapshot()


def run_seed(seed: int) -> None:
    with SimCluster(config(), seed, snapshot_every_entries=40) as sim:
        sim.run(sim.start_all())
        log = sim.run(scenario(sim, random.Random(seed)))
        assert any(w.acked for w in log), f"seed {seed}: no write was acknowledged"
        check_recovered(sim, log)


@pytest.mark.parametrize("seed", SEEDS)
def test_raft_safety_under_faults(seed: int) -> None:
    try:
        run_seed(seed)
    except AssertionError as exc:
        pytest.fail(
            f"seed {seed}: {exc}\n  replay: SIM_SEED={seed} pytest tests/sim/test_metadata_sim.py",
            pytrace=False,
        )


MUTATION_SEEDS = range(3)


@pytest.mark.parametrize("seed", MUTATION_SEEDS)
def test_check_fires_when_a_node_acknowledges_overwrites_it_never_commits(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mutation: n2 answers ok to an overwrite without proposing it. The final value
    check must see that an acknowledged value is gone."""
    real = MetadataService.propose

    async def lying_propose(self: MetadataService, command: Command) -> Result:
        overwrite = isinstance(command, Put) and self.state.get(command.key) is not None
        if self.node_id == "n2" and overwrite:
            return Result(ok=True, value=self.state.applied_index)
        return await real(self, command)

    monkeypatch.setattr(MetadataService, "propose", lying_propose)
    with pytest.raises(AssertionError, match=r"k\d+ on n\d holds"):
        run_seed(seed)


def test_same_seed_replays_the_same_run() -> None:
    def trace(seed: int) -> tuple[int, int, float, str | None]:
        with SimCluster(config(), seed) as sim:
            sim.run(sim.start_all())
            sim.run(scenario(sim, random.Random(seed)))
            return sim.net.sent, sim.net.dropped, sim.loop.time(), sim.leader()

    assert trace(11) == trace(11)
    assert trace(11) != trace(12)


def test_a_read_before_the_log_is_open_is_unavailable_not_a_crash() -> None:
    """The API serves while a node starts: the token gate's read then must get a clean
    'not yet' (a 503), never an assertion (a 500 and an error in the log)."""
    import random as _random

    from fabric.errors import Unavailable
    from fabric.sim.disk import SimDisk
    from fabric.sim.loop import SimClock, VirtualLoop
    from fabric.sim.network import SimNetwork
    from nodes.services.metadata import MetadataService
    from tests.sim.conftest import config as sim_config

    loop = VirtualLoop()
    try:
        net = SimNetwork(_random.Random(1))
        svc = MetadataService(
            "n1",
            sim_config(3),
            SimClock(),
            _random.Random(1),
            net.transport("n1", lambda coro: loop.create_task(coro)),
            SimDisk("n1/d0"),
            None,
        )
        with pytest.raises(Unavailable, match="starting"):
            loop.run_until_complete(svc.read_index())
    finally:
        loop.close()
