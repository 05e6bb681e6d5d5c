"""The fault vocabulary (``fabric.faults``): requests checked, targets resolved, seeded."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fabric import faults
from fabric.errors import BadRequest
from fabric.faults import CLIENTS, Topology, parse_request, resolve

TOPO = Topology(
    ("n1", "n2", "n3", "n4", "n5"),
    {"n1": "r1", "n2": "r1", "n3": "r2", "n4": "r2", "n5": "r3"},
    leader="n2",
)


def plan(body: dict[str, object], seed: int = 1) -> faults.Plan:
    return resolve(parse_request(body), TOPO, random.Random(seed))


def test_defaults_are_filled_and_numbers_become_floats() -> None:
    req = parse_request({"kind": "net-delay", "target": {"select": "one"}, "params": {"ms": 50}})
    assert req.params == {"ms": 50.0, "jitter_ms": 0.0, "distribution": "uniform"}
    assert req.duration_s is None
    req = parse_request({"kind": "disk-fail", "target": {"nodes": ["n1"]}, "duration_s": 2})
    assert req.params == {"ops": ["read", "write", "fsync"], "probability": 1.0}
    assert req.duration_s == 2.0


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"kind": "net-dealy", "target": {"select": "all"}}, "unknown fault kind 'net-dealy'"),
        ({"kind": "net-delay", "target": {"select": "all"}}, "'ms' is required"),
        ({"kind": "net-loss", "target": {"select": "all"}, "params": {"probability": 2}}, "[0, 1]"),
        ({"kind": "net-loss", "target": {"select": "x"}, "params": {"probability": 1}}, "select"),
        ({"kind": "disk-full", "target": {"select": "all"}, "params": {"size": 1}}, "'size'"),
        ({"kind": "disk-fail", "target": {"nodes": []}}, "non-empty list"),
        ({"kind": "disk-fail", "target": {"nodes": ["n1"]}, "params": {"ops": ["x"]}}, "ops"),
        ({"kind": "disk-full", "target": {"from": {"nodes": ["n1"]}, "to": "clients"}}, "network"),
        ({"kind": "net-duplicate", "target": {"from": {"nodes": ["n1"]}, "to": "clients"}}, "c"),
        ({"kind": "clock-skew", "target": {"select": "one"}, "params": {"offset_s": True}}, "num"),
        ({"kind": "net-reset", "target": {"select": "all"}, "duration_s": 0}, "duration_s"),
        ({"kind": "net-reset", "target": "all"}, "target must be"),
    ],
)
def test_bad_requests_say_what_is_wrong(body: dict[str, object], says: str) -> None:
    with pytest.raises(BadRequest, match=None) as info:
        parse_request(body)
    assert says in info.value.message


def test_selections_follow_the_seed_and_the_topology() -> None:
    one = plan({"kind": "node-kill", "target": {"select": "one"}}, seed=7)
    assert one.nodes == plan({"kind": "node-kill", "target": {"select": "one"}}, seed=7).nodes
    assert len(one.nodes) == 1
    assert {
        len(plan({"kind": "node-pause", "target": {"select": s}}).nodes) for s in ["minority"]
    } == {2}
    assert len(plan({"kind": "node-pause", "target": {"select": "majority"}}).nodes) == 3
    assert plan(
        {"kind": "clock-skew", "target": {"select": "leader"}, "params": {"offset_s": 1}}
    ).nodes == ("n2",)
    assert plan({"kind": "disk-full", "target": {"select": "rack:r2"}}).nodes == ("n3", "n4")
    seen = {
        plan({"kind": "node-kill", "target": {"select": "one"}}, seed=s).nodes for s in range(40)
    }
    assert len(seen) == 5, "every node can be chosen"


def test_unknown_nodes_and_empty_selections_are_refused() -> None:
    with pytest.raises(BadRequest, match="unknown node 'n9'"):
        plan({"kind": "node-kill", "target": {"nodes": ["n9"]}})
    with pytest.raises(BadRequest, match="names no node"):
        plan({"kind": "node-kill", "target": {"select": "rack:r9"}})
    with pytest.raises(BadRequest, match="no leader"):
        resolve(
            parse_request({"kind": "node-kill", "target": {"select": "leader"}}),
            Topology(("n1",)),
            random.Random(1),
        )


def test_a_plain_network_target_cuts_every_link_of_its_nodes_both_ways() -> None:
    p = plan({"kind": "net-partition", "target": {"nodes": ["n1"]}})
    assert p.nodes == ("n1",)
    assert p.acts["n1"] == ("n2", "n3", "n4", "n5")
    assert all(p.acts[n] == ("n1",) for n in ("n2", "n3", "n4", "n5"))


def test_one_way_targets_act_only_on_the_sending_side() -> None:
    p = plan(
        {
            "kind": "net-loss",
            "target": {"from": {"nodes": ["n1", "n2"]}, "to": {"nodes": ["n2", "n3"]}},
            "params": {"probability": 0.5},
        }
    )
    assert p.acts == {"n1": ("n2", "n3"), "n2": ("n3",)}
    assert p.nodes == ("n1", "n2", "n3")
    c = plan(
        {
            "kind": "net-delay",
            "target": {"from": {"select": "all"}, "to": "clients"},
            "params": {"ms": 5},
        }
    )
    assert c.acts == {n: (CLIENTS,) for n in TOPO.nodes}


def test_records_round_trip_and_are_checked() -> None:
    req = parse_request(
        {
            "kind": "clock-strobe",
            "target": {"select": "one"},
            "params": {"offset_s": 5, "period_s": 1},
        }
    )
    fault = faults.Fault("fab12", req.kind, req.target, ("n3",), req.params, 100.0, 130.0, ())
    assert faults.from_text(fault.to_text()) == fault
    assert "clock-strobe fab12 on n3" in faults.describe(fault)
    with pytest.raises(BadRequest):
        faults.from_text(fault.to_text().replace('"period_s": 1.0', '"period_s": -1'))
    with pytest.raises(BadRequest):
        faults.from_text('{"id": "../x"}')


# --- the appliers, on a real directory ------------------------------------------------------
def _fault(kind: str, params: dict[str, object], fid: str = "f1") -> faults.Fault:
    return faults.Fault(
        fid, kind, {"select": "all"}, ("n1",), faults.check_params(kind, params), 0.0, None
    )


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1000.0 + self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_a_skewed_clock_moves_wall_only_and_a_strobe_alternates() -> None:
    from nodes.faultinject import FaultyClock

    clock = FaultyClock(_Clock())
    clock.set(_fault("clock-skew", {"offset_s": 90}))
    assert (clock.now(), clock.wall(), clock.skew_s()) == (100.0, 1190.0, 90.0)
    clock.set(_fault("clock-strobe", {"offset_s": 5, "period_s": 2}))
    seen = []
    for _ in range(4):
        seen.append(clock.skew_s())
        clock.inner.t += 1.0  # type: ignore[attr-defined]
    assert seen == [5.0, 0.0, 5.0, 0.0]
    clock.set(None)
    assert clock.wall() == 1000.0 + clock.now()


def test_faulty_disk_fails_fills_corrupts_and_loses_only_unsynced(tmp_path: Path) -> None:
    import asyncio

    from fabric.ports import DiskFault, DiskFull
    from nodes.faultinject import FaultyDisk
    from nodes.runtime import FileDisk

    async def go() -> None:
        disk = FaultyDisk(FileDisk("disk0", str(tmp_path)), random.Random(1))
        await disk.append("a.eg", b"synced")
        await disk.sync("a.eg")
        await disk.add(_fault("disk-lose-unsynced", {}, "lazy"))
        assert await disk.append("a.eg", b"-held") == 6
        assert await disk.pread("a.eg", 0, 11) == b"synced-held"
        assert (tmp_path / "a.eg").read_bytes() == b"synced", "held in memory until sync"
        await disk.append("a.eg", b"+kept")
        await disk.sync("a.eg")
        assert (tmp_path / "a.eg").read_bytes() == b"synced-held+kept"
        await disk.remove("lazy")
        await disk.add(_fault("disk-full", {}, "full"))
        with pytest.raises(DiskFull):
            await disk.append("a.eg", b"x")
        used, capacity = await disk.usage()
        assert used == capacity
        await disk.remove("full")
        await disk.add(_fault("disk-fail", {"ops": ["fsync"]}, "eio"))
        with pytest.raises(DiskFault):
            await disk.sync("a.eg")
        assert await disk.pread("a.eg", 0, 6) == b"synced", "reads still work"
        await disk.remove("eio")
        await disk.add(_fault("disk-corrupt", {"mode": "at-rest"}, "rot"))
        after = (tmp_path / "a.eg").read_bytes()
        assert len(after) == 16 and after != b"synced-held+kept" and disk.flipped == 1
        await disk.remove("rot")
        assert not disk.faults

    asyncio.run(go())
