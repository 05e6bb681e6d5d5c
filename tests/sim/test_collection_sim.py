"""Data without metadata is collected: after a crash between append and commit, and after
the scanner's passes, the bytes on every disk are exactly what the metadata references.

Writers claim a new extent group's files (``RegisterIntents``) before the first byte.
Here the node coordinating a write is crashed (power loss) right after its appends
landed on the replicas and before its ``WriteExtents`` commits, over many seeds. Once
everything is back and the claims have timed out, every extent-group file on every
simulated disk must belong to a group record that lists that node, every replica a
record lists must be there, and no tombstone is left (no disk can hold its file).
Replay with ``GC_SEED=<seed>``.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fabric.errors import FabricError
from fabric.extents.policy import ContainerPolicy
from fabric.limits import CLAIM_TIMEOUT_S, FILE_SWEEP_EVERY_S, UNKNOWN_FILE_GRACE_S
from fabric.metadata import keys
from nodes.simcluster import SimCluster
from tests.sim.conftest import chunks, started

MiB = 1 << 20
SEEDS = (
    [int(os.environ["GC_SEED"])]
    if "GC_SEED" in os.environ
    else list(range(int(os.environ.get("GC_SEEDS", "8"))))
)


async def files_on_disks(sim: SimCluster) -> dict[str, set[str]]:
    """node -> egids of the extent-group files on its disks."""
    out: dict[str, set[str]] = {}
    for node_id, disks in sim.disks.items():
        names = [name for disk in disks for name in await disk.listdir()]
        out[node_id] = {n[: -len(".eg")] for n in names if n.endswith(".eg")}
    return out


def referenced(sim: SimCluster) -> dict[str, set[str]]:
    """node -> egids the leader's metadata says it holds."""
    leader = sim.leader()
    assert leader is not None
    out: dict[str, set[str]] = {n: set() for n in sim.disks}
    for _, item in sim.nodes[leader].metadata.state.scan(keys.EGROUP):
        for node in item.value.replicas:
            out.setdefault(node, set()).add(item.value.egid)
    return out


def crash_after_appends(sim: SimCluster, node_id: str, rng: random.Random) -> None:
    """Power-loss ``node_id`` right after some of its appends land (before the commit)."""
    replicas = sim.nodes[node_id].replicas
    original: Callable[..., Awaitable[Any]] = replicas.append_replicas

    async def append_then_maybe_crash(eg: Any, payloads: list[bytes], at: int = -1) -> list[int]:
        offsets: list[int] = await original(eg, payloads, at)
        if rng.random() < 0.5 and node_id in sim.nodes:
            sim.crash(node_id)  # cancels this very task: the commit never happens
        return offsets

    replicas.append_replicas = append_then_maybe_crash  # type: ignore[method-assign]


@pytest.mark.parametrize("seed", SEEDS)
def test_files_of_uncommitted_writes_are_collected(seed: int) -> None:
    sim = started(nodes=5, seed=700 + seed)
    rng = random.Random(seed)
    try:

        async def setup() -> None:
            g = sim.nodes["n1"]
            await g.catalog.create_container("c", ContainerPolicy(rf=2))
            await g.catalog.create_vdisk("v", "c", 64 * MiB)

        sim.run(setup())

        async def workload() -> None:
            for _step in range(12):
                via = rng.choice(sorted(n for n in sim.nodes if n != sim.leader()))
                crash_after_appends(sim, via, rng)
                data = rng.randbytes(MiB) * rng.randint(1, 3)
                offset = rng.randrange(0, 60) * MiB
                try:
                    await asyncio.wait_for(
                        sim.nodes[via].writer.write("v", offset, len(data), chunks(data)), 60
                    )
                except (FabricError, asyncio.CancelledError, KeyError, TimeoutError):
                    pass  # the writer died mid-write: not acknowledged
                for down in sorted(set(sim.disks) - set(sim.nodes)):
                    await sim.restart(down)
                await sim.sleep(rng.uniform(0.1, 2.0))

        sim.run(workload())
        settle = CLAIM_TIMEOUT_S + FILE_SWEEP_EVERY_S * 2 + UNKNOWN_FILE_GRACE_S + 30

        async def until_clean() -> None:
            deadline = sim.loop.time() + settle
            while True:
                diff = "no leader"
                if sim.leader() is not None:
                    state = sim.nodes[sim.leader() or ""].metadata.state
                    claims = [key for key, _ in state.scan(keys.EGROUP_INTENT)]
                    tombstones = [key for key, _ in state.scan(keys.EGROUP_DROPPED)]
                    on_disk, wanted = await files_on_disks(sim), referenced(sim)
                    if not claims and not tombstones and on_disk == wanted:
                        return
                    diff = f"claims {claims}; tombstones {tombstones}; " + "; ".join(
                        f"{n}: extra {sorted(on_disk[n] - wanted.get(n, set()))} "
                        f"missing {sorted(wanted.get(n, set()) - on_disk[n])}"
                        for n in sorted(on_disk)
                        if on_disk[n] != wanted.get(n, set())
                    )
                if sim.loop.time() >= deadline:
                    raise AssertionError(f"seed {sim.seed}: disks differ from metadata: {diff}")
                await sim.sleep(1.0)

        sim.run(until_clean())
        # And the bytes too: every copy in use holds its extents, nothing else is left.
        sim.check_disks(strict=True)
    except AssertionError as exc:
        pytest.fail(f"{exc}\n  replay: GC_SEED={seed} pytest {__file__}", pytrace=False)
    finally:
        sim.close()
