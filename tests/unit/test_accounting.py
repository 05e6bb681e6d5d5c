"""Resiliency from the indexes equals a recount from every record, whoever is down."""

from __future__ import annotations

import random

import pytest

from fabric.extents.policy import ContainerPolicy
from fabric.metadata import keys
from fabric.metadata.commands import (
    CommitStrip,
    CreateContainer,
    CreateVdisk,
    MapWrite,
    NewEgroup,
    NewExtent,
    RegisterNode,
    SetNodeState,
    WriteExtents,
)
from fabric.metadata.records import StripMember
from fabric.metadata.state import MetadataState
from nodes.services.accounting import resiliency

NODES = [f"n{i}" for i in range(1, 7)]


def build(seed: int) -> MetadataState:
    rng = random.Random(seed)
    s = MetadataState()
    index = iter(range(1, 10_000))
    for node in NODES:
        assert s.apply(next(index), RegisterNode(node, "127.0.0.1:1", ("d",), {})).ok
    for name, policy in (
        ("a", ContainerPolicy(rf=3)),
        ("b", ContainerPolicy(rf=2, ec_k=2, ec_m=1)),
    ):
        assert s.apply(next(index), CreateContainer(name, policy.to_dict(), 1.0)).ok
        assert s.apply(next(index), CreateVdisk(f"vd-{name}", name, name, 1 << 40, 1.0)).ok
    egs: list[str] = []
    for g in range(60):
        container = rng.choice("ab")
        egid = f"eg-{g}"
        replicas = tuple(rng.sample(NODES, rng.randint(1, 3)))
        cmd = WriteExtents(
            f"vd-{container}",
            (NewEgroup(egid, container, replicas, replicas[0]),),
            (NewExtent(f"x{g}", egid, 0, 10, 10, False, g),),
            (MapWrite(g, None, f"x{g}"),),
            seal=(egid,),
        )
        assert s.apply(next(index), cmd).ok
        if container == "b":
            egs.append(egid)
        if len(egs) == 2:
            nodes = rng.sample(NODES, 3)
            data = tuple(StripMember(e, nodes[i]) for i, e in enumerate(egs))
            parity = (StripMember(f"p-{egid}", nodes[2]),)
            assert s.apply(next(index), CommitStrip(f"st-{g}", "b", 1, 1, data, parity, 1)).ok
            egs = []
    return s


def recount(s: MetadataState) -> dict[str, int]:
    up = s.up_nodes()
    worst: dict[str, int] = {}
    for _, item in s.scan(keys.EGROUP):
        eg = item.value
        if eg.extents and not eg.strip and not eg.parity:
            left = sum(1 for n in eg.replicas if n in up) - 1
            worst[eg.container] = min(worst.get(eg.container, left), left)
    for _, item in s.scan(keys.STRIP):
        strip = item.value
        left = sum(1 for m in strip.members if m.node in up) - strip.k
        worst[strip.container] = min(worst.get(strip.container, left), left)
    return worst


@pytest.mark.parametrize("seed", range(20))
def test_resiliency_from_indexes_matches_a_recount(seed: int) -> None:
    s = build(seed)
    rng = random.Random(seed)
    assert resiliency(s) == recount(s), f"seed {seed}: all up"
    for count in (1, 2, 3):
        for node in rng.sample(NODES, count):
            s.apply(s.applied_index + 1, SetNodeState(node, "DOWN", 2.0))
        assert resiliency(s) == recount(s), f"seed {seed}: {count} down"
        for node in NODES:
            s.apply(s.applied_index + 1, SetNodeState(node, "UP", 3.0))
