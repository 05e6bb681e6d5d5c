"""An upload finishing while the leader sweeps it as orphaned resolves one way.

The owner's ACTIVE and the leader's ERROR are both compare-and-set updates from
PENDING: whichever commits first wins, the other is refused. Whatever the order, the
outcome is consistent: an ACTIVE image has its vdisk and reads back; an ERROR image
has none, and the uploader got an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fabric.errors import FabricError
from fabric.metadata.commands import SetNodeState
from nodes.simcluster import SimCluster
from tests.sim.conftest import started

RAW = bytes(range(256)) * 4096 * 3  # 3 MiB raw image


async def body(gate: asyncio.Event) -> AsyncIterator[bytes]:
    yield RAW[: len(RAW) // 2]
    await gate.wait()  # the test lets the rest through when it chooses
    yield RAW[len(RAW) // 2 :]


async def race(sim: SimCluster, sweep_first: bool) -> tuple[dict[str, Any] | str, Any]:
    owner, leader = sim.nodes["n2"], sim.nodes[sim.leader() or ""]
    image = await owner.images.create({"name": "racer"})
    gate = asyncio.Event()
    upload = asyncio.ensure_future(owner.images.upload(image["id"], body(gate)))

    def writing() -> bool:
        record = owner.metadata.state.image(image["id"])
        return record is not None and record.vdisk_id is not None

    await sim.wait_for(writing, 20, "the upload under way")
    # The leader believes the owner died: its sweep will fail the image.
    await leader.metadata.propose(SetNodeState("n2", "DOWN", 1.0, "test"))
    if sweep_first:
        await leader.images.fail_orphans()
        gate.set()
    else:
        gate.set()
        await asyncio.wait([upload])
        await leader.images.fail_orphans()
    try:
        outcome: dict[str, Any] | str = await upload
    except FabricError as exc:
        outcome = f"refused: {exc}"
    await leader.metadata.propose(SetNodeState("n2", "UP", 2.0, "test"))
    return outcome, await leader.images.get("racer")


@pytest.mark.parametrize("sweep_first", [True, False])
def test_active_and_the_orphan_sweep_resolve_one_way(sweep_first: bool) -> None:
    sim = started(nodes=3, seed=77)
    try:
        outcome, image = sim.run(race(sim, sweep_first))
        leader = sim.nodes[sim.leader() or ""]
        vdisks = sim.run(leader.catalog.vdisks())
        if sweep_first:
            assert isinstance(outcome, str), f"seed {sim.seed}: the upload won after the sweep"
            assert image["state"] == "ERROR"
            assert not vdisks, f"seed {sim.seed}: an ERROR image left {vdisks}"
        else:
            assert isinstance(outcome, dict) and outcome["state"] == "ACTIVE", outcome
            assert image["state"] == "ACTIVE", f"seed {sim.seed}: the sweep undid an ACTIVE"
            record = leader.images.image("racer")
            assert record.vdisk_id is not None
            _, _, stream = sim.run(leader.reader.read(record.vdisk_id, 0, len(RAW)))

            async def read() -> bytes:
                return b"".join([c async for c in stream])

            assert sim.run(read()) == RAW
    finally:
        sim.close()
