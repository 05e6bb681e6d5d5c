"""The metadata state machine is deterministic, refuses conflicts as values, snapshots."""

from __future__ import annotations

from fabric.metadata.commands import Batch, Delete, Put, RegisterNode, SetNodeState
from fabric.metadata.state import MetadataState


def test_versions_are_log_indexes_and_conflicts_are_refusals() -> None:
    s = MetadataState()
    assert s.apply(1, Put("kv/a", {"x": 1})).value == 1
    refused = s.apply(2, Put("kv/a", 2, expect_version=7))
    assert not refused.ok and refused.code == "conflict"
    assert s.get("kv/a").value == {"x": 1}  # type: ignore[union-attr]
    assert s.apply(3, Put("kv/a", 3, expect_version=1)).ok
    assert s.get("kv/a").version == 3  # type: ignore[union-attr]


def test_batch_is_all_or_nothing() -> None:
    s = MetadataState()
    s.apply(1, Put("kv/a", 1))
    r = s.apply(2, Batch((Put("kv/b", 2), Delete("kv/a", expect_version=99))))
    assert not r.ok
    assert s.get("kv/b") is None and s.get("kv/a") is not None


def test_node_registration_and_health_transitions() -> None:
    s = MetadataState()
    s.apply(1, RegisterNode("n1", "127.0.0.1:1", ("d0",), {"rack": "r1"}))
    assert s.apply(2, SetNodeState("n1", "DOWN", 10.0, "no report")).ok
    assert s.nodes()["n1"].state == "DOWN"
    assert not s.apply(3, SetNodeState("n9", "UP", 11.0)).ok


def test_snapshot_restores_identical_state() -> None:
    s = MetadataState()
    for i in range(1, 50):
        s.apply(i, Put(f"kv/k{i % 7}", [i, "v", {"x": -1}]))
    s.skip(50)
    r = MetadataState.restore(s.snapshot())
    assert r.snapshot() == s.snapshot()
    assert r.applied_index == 50


def test_a_scan_survives_keys_deleted_while_it_is_paused() -> None:
    s = MetadataState()
    for i in range(1, 6):
        s.apply(i, Put(f"kv/k{i}", i))
    seen = []
    for key, _item in s.scan("kv/k"):
        seen.append(key)
        if key == "kv/k2":
            s.apply(6, Delete("kv/k4"))  # a command applied while a caller awaited
    assert seen == ["kv/k1", "kv/k2", "kv/k3", "kv/k5"]
