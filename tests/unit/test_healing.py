"""The healing parts of the state machine and their inputs: the event log, settings,
``AddReplica``, the ``[rebuild]``/``[scrub]`` config, rates, and rebuild copy windows."""

from __future__ import annotations

import argparse
import itertools

import pytest

from fabric import limits
from fabric.config import ConfigError, default_config_text, parse_config, render_config
from fabric.extents.policy import ContainerPolicy
from fabric.metadata import healing, keys
from fabric.metadata.commands import (
    AddReplica,
    CreateContainer,
    CreateVdisk,
    MapWrite,
    NewEgroup,
    NewExtent,
    RecordEvents,
    RegisterIntents,
    RegisterNode,
    SealEgroups,
    SetNodeState,
    SetRebuildSettings,
    WriteExtents,
)
from fabric.metadata.records import EgroupIntent, EventRecord, RebuildSettings, StripMember
from fabric.metadata.state import MetadataState
from fabric.wire.messages import ExtentCheck
from nodes.services.copier import windows
from shell.cli import parse_rate

MiB = 1 << 20


def event(message: str, kind: str = "settings") -> EventRecord:
    return EventRecord(0, 1.0, kind, "n1", "", message)


def test_the_event_log_numbers_in_order_and_keeps_only_the_latest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "EVENTS_KEPT", 5)
    s = MetadataState()
    for i in range(1, 9):
        assert s.apply(i, RecordEvents((event(f"e{i}"),))).ok
    kept = healing.events(s, 0, 100)
    assert [e.seq for e in kept] == [4, 5, 6, 7, 8]
    assert [e.message for e in kept] == ["e4", "e5", "e6", "e7", "e8"]
    assert len(list(s.scan(keys.EVENT))) == 5  # bounded in the key space too
    assert [e.seq for e in healing.events(s, 6, 100)] == [7, 8]
    assert [e.seq for e in healing.events(s, 4, 2)] == [5, 6]
    assert [e.seq for e in healing.latest_events(s, 2)] == [7, 8]


def test_a_node_state_change_is_an_event_and_a_repeat_is_not() -> None:
    s = MetadataState()
    assert s.apply(1, RegisterNode("n2", "127.0.0.1:1", ("d",), {})).ok
    assert s.apply(2, SetNodeState("n2", "DOWN", 5.0, "no report for 4.0 s")).ok
    assert s.apply(3, SetNodeState("n2", "DOWN", 6.0, "no report for 5.0 s")).ok
    log = healing.events(s)
    assert len(log) == 1 and log[0].kind == "node_state"
    assert log[0].message == "node n2: UP -> DOWN (no report for 4.0 s)"
    assert log[0].at_wall == 5.0 and log[0].severity == "warning"


def test_the_cached_node_records_match_a_fresh_scan_and_never_change_under_a_reader() -> None:
    s = MetadataState()
    for i, n in enumerate(("n3", "n1", "n12", "n2"), start=1):
        assert s.apply(i, RegisterNode(n, f"127.0.0.1:{i}", ("d",), {})).ok
    before, up_before = s.nodes(), s.up_nodes()
    assert s.apply(5, SetNodeState("n12", "DOWN", 5.0, "gone")).ok
    assert s.apply(6, RegisterNode("n0", "127.0.0.1:6", ("d",), {})).ok
    assert before["n12"].state == "UP" and len(before) == 4  # a reader's view stands
    assert up_before == {"n1", "n2", "n3", "n12"}
    fresh = {key[len(keys.NODE) :]: item.value for key, item in s.scan(keys.NODE)}
    assert list(s.nodes().items()) == list(fresh.items())  # same records, same order
    assert s.up_nodes() == {"n0", "n1", "n2", "n3"}


def test_malformed_events_and_settings_are_refused() -> None:
    s = MetadataState()
    assert s.apply(1, RecordEvents((event("x", kind="nonsense"),))).code == "bad_command"
    assert s.apply(2, RecordEvents(())).code == "bad_command"
    assert s.apply(3, SetRebuildSettings(RebuildSettings(per_node=0))).code == "bad_command"
    assert healing.events(s) == []
    assert healing.effective_rebuild(s, RebuildSettings()) == RebuildSettings()
    assert s.apply(4, SetRebuildSettings(RebuildSettings(delay_s=0.0))).ok
    assert healing.effective_rebuild(s, RebuildSettings()).delay_s == 0.0


def group_state(sealed: bool = True) -> MetadataState:
    """A container with one RF2 group on n1 and n2 holding one 1 MiB extent."""
    s = MetadataState()
    assert s.apply(1, CreateContainer("c", ContainerPolicy(rf=2).to_dict(), 1.0)).ok
    assert s.apply(2, CreateVdisk("vd-1", "v", "c", MiB, 1.0)).ok
    eg = NewEgroup("eg-1", "c", ("n1", "n2"), "n1")
    write = WriteExtents(
        "vd-1", (eg,), (NewExtent("x1", "eg-1", 0, MiB, MiB, False, 7),), (MapWrite(0, None, "x1"),)
    )
    assert s.apply(3, write).ok
    if sealed:
        assert s.apply(4, SealEgroups(("eg-1",))).ok
    return s


def claim(s: MetadataState, index: int, node: str) -> None:
    intent = EgroupIntent(keys.rebuild_claim("eg-1"), "c", (StripMember("eg-1", node),), "n1")
    assert s.apply(index, RegisterIntents((intent,))).ok


def test_add_replica_swaps_the_lost_copy_for_the_new_one() -> None:
    s = group_state()
    physical = s.container("c").stats.physical_bytes  # type: ignore[union-attr]
    claim(s, 5, "n3")
    result = s.apply(6, AddReplica("eg-1", "n2", "n3", MiB))
    assert result.ok, result.message
    eg = s.egroup("eg-1")
    assert eg is not None and eg.replicas == ("n1", "n3")
    stats = s.container("c").stats  # type: ignore[union-attr]
    assert stats.physical_bytes == physical and stats.rebuilt_bytes == MiB
    assert s.get(keys.intent_key(keys.rebuild_claim("eg-1"))) is None
    assert s.idx.egroups_on.get("n2") is None and "eg-1" in s.idx.egroups_on["n3"]


@pytest.mark.parametrize(
    ("sealed", "claimed", "cmd", "code"),
    [
        (False, True, AddReplica("eg-1", "n2", "n3"), "conflict"),  # still being written
        (True, False, AddReplica("eg-1", "n2", "n3"), "egroup_sealed"),  # claim expired
        (True, True, AddReplica("eg-1", "n4", "n3"), "conflict"),  # n4 never held it
        (True, True, AddReplica("eg-1", "n2", "n1"), "conflict"),  # n1 holds it already
        (True, True, AddReplica("eg-9", "n2", "n3"), "not_found"),
        (True, True, AddReplica("eg-1", "n3", "n3"), "bad_command"),
    ],
)
def test_add_replica_is_refused_when_the_group_changed(
    sealed: bool, claimed: bool, cmd: AddReplica, code: str
) -> None:
    s = group_state(sealed)
    if claimed:
        claim(s, 5, "n3")
    before = s.egroup("eg-1")
    assert s.apply(6, cmd).code == code
    assert s.egroup("eg-1") == before


def test_rebuild_and_scrub_settings_come_from_the_config() -> None:
    text = default_config_text() + "\n[rebuild]\ndelay_s = 0\nbytes_per_s = 200000000\n"
    text += "\n[scrub]\ncycle_s = 3600\n"
    cfg = parse_config(text)
    assert cfg.rebuild == RebuildSettings(0.0, 200_000_000, 8)
    assert cfg.scrub.cycle_s == 3600.0
    assert parse_config(render_config(cfg)).rebuild == cfg.rebuild  # what `fabric up` writes


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("[rebuild]\nper_node = 0\n", "rebuild.per_node: must be 1..64"),
        ("[rebuild]\ndelay_s = -1\n", "rebuild.delay_s: must be 0..604800"),
        ("[rebuild]\nrate = 5\n", "rebuild.rate: unknown setting"),
        ('[scrub]\nbytes_per_s = "fast"\n', "scrub.bytes_per_s: must be a number"),
    ],
)
def test_bad_healing_settings_name_the_key_and_line(table: str, problem: str) -> None:
    text = default_config_text() + "\n" + table
    line = text.splitlines().index(table.splitlines()[1]) + 1
    with pytest.raises(ConfigError, match=f"cfg.toml:{line}: {problem}"):
        parse_config(text, "cfg.toml")


def test_rates_read_as_a_user_writes_them() -> None:
    assert parse_rate("200MB/s") == 200_000_000
    assert parse_rate("1GiB/s") == 1 << 30
    assert parse_rate("1.5G") == 1_500_000_000
    assert parse_rate("0") == parse_rate("unlimited") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="not a rate"):
        parse_rate("fast")


def test_copy_windows_cover_the_file_and_never_split_an_extent() -> None:
    checks = tuple(ExtentCheck(i * 3 * MiB, 3 * MiB, 0) for i in range(5))  # 15 MiB
    plan = windows(16 * MiB, checks, 4 * MiB)
    assert plan[0][0] == 0 and plan[-1][1] == 16 * MiB
    assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))
    for c in checks:
        assert any(a <= c.offset and c.offset + c.length <= b for a, b in plan)
    big = (ExtentCheck(0, 10 * MiB, 0),)
    assert windows(10 * MiB, big, 4 * MiB) == [(0, 10 * MiB)]
    assert windows(0, (), 4 * MiB) == []
    # A file shorter than its extents say (a lost tail) still asks for every extent.
    assert windows(MiB, (ExtentCheck(0, 2 * MiB, 0),), 4 * MiB) == [(0, 2 * MiB)]
