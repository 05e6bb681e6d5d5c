"""Limits of the image catalog and the kv space on a seeded simulated cluster.

An image created for an upload that never comes expires through the leader's scanner,
while one whose upload is under way (however slow) is left alone; the cluster refuses
more PENDING images than its cap; a kv write over the quota is refused on every node
alike, and a delete makes room.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from fabric import limits
from fabric.config import ServeLimits
from fabric.errors import TooManyRequests
from fabric.metadata import keys
from fabric.metadata.commands import Delete, Put
from nodes.simcluster import SimCluster
from tests.sim.conftest import config

SEED = 31
TTL_S = 5.0


def start(seed: int = SEED) -> SimCluster:
    cfg = replace(config(3), limits=ServeLimits(pending_image_ttl_s=TTL_S))
    sim = SimCluster(cfg, seed)
    sim.run(sim.start_all())
    sim.run(
        sim.wait_for(
            lambda: sim.leader() is not None and all(n.registered for n in sim.nodes.values()),
            20,
            "a leader and every node registered",
        )
    )
    return sim


def test_an_upload_that_never_came_expires_and_a_slow_one_does_not() -> None:
    sim = start()
    try:
        svc = sim.nodes["n2"].images
        never = sim.run(svc.create({"name": "never"}))
        slow = sim.run(svc.create({"name": "slow"}))
        resume = asyncio.Event()

        async def trickle() -> AsyncIterator[bytes]:
            yield bytes(64 * 1024)
            await resume.wait()  # a client that pauses (the HTTP server bounds that)
            yield bytes(64 * 1024)

        upload = sim.loop.create_task(svc.upload(slow["id"], trickle()))

        def state(image_id: str) -> str:
            record = sim.nodes["n3"].metadata.state.image(image_id)
            assert record is not None, f"seed {SEED}: image {image_id} gone"
            return record.state

        sim.run(sim.wait_for(lambda: state(never["id"]) == "ERROR", 4 * TTL_S, "expiry"))
        expired = sim.nodes["n1"].metadata.state.image(never["id"])
        assert expired is not None and expired.error == f"upload never arrived within {TTL_S:g} s"
        assert state(slow["id"]) == "PENDING", f"seed {SEED}: an upload under way expired"
        sim.run(sim.sleep(2 * TTL_S))  # well past the TTL: the claimed image stays
        assert state(slow["id"]) == "PENDING", f"seed {SEED}: an upload under way expired"
        resume.set()

        async def finished() -> dict[str, Any]:
            return await upload

        done = sim.run(finished())
        assert done["state"] == "ACTIVE", f"seed {SEED}: {done}"
    finally:
        sim.close()


def test_pending_images_are_capped_by_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_PENDING_IMAGES", 3)
    sim = start()
    try:
        for i, node in enumerate(["n1", "n2", "n3"]):
            sim.run(sim.nodes[node].images.create({"name": f"img{i}"}))
        with pytest.raises(TooManyRequests, match="3 images are PENDING"):
            sim.run(sim.nodes["n2"].images.create({"name": "one-too-many"}))
        sim.run(sim.nodes["n1"].images.delete("img0"))
        sim.run(sim.nodes["n3"].images.create({"name": "now-it-fits"}))
    finally:
        sim.close()


def test_the_kv_quota_is_refused_alike_on_every_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "KV_TOTAL_BYTES", 5_000)
    sim = start()
    try:
        value = "v" * 1000
        n2 = sim.nodes["n2"].metadata
        for i in range(4):
            assert sim.run(n2.propose(Put(f"kv/k{i}", value))).ok, f"seed {SEED}"
        refused = sim.run(n2.propose(Put("kv/k4", value)))
        assert refused.code == "insufficient_storage", f"seed {SEED}: {refused}"
        assert sim.run(n2.propose(Delete("kv/k0"))).ok, f"seed {SEED}"
        assert sim.run(sim.nodes["n3"].metadata.propose(Put("kv/k4", value))).ok, f"seed {SEED}"
        # n3 proposed the last write: its index is the one every node must reach.
        applied = sim.nodes["n3"].metadata.state.applied_index
        sim.run(
            sim.wait_for(
                lambda: all(n.metadata.state.applied_index >= applied for n in sim.nodes.values()),
                5,
                "every node applied the last write",
            )
        )
        used = {n.id: n.metadata.state.idx.kv_bytes for n in sim.nodes.values()}
        assert len(set(used.values())) == 1, f"seed {SEED}: nodes disagree on kv use {used}"
        assert used["n1"] == 4 * keys.kv_entry_bytes("kv/k1", value), f"seed {SEED}: {used}"
    finally:
        sim.close()
