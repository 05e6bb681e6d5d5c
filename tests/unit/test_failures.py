"""Failure processes: the ``[failures]`` table and the seeded schedule it gives."""

from __future__ import annotations

import math
import statistics

import pytest

from fabric.failures import (
    YEAR_S,
    FailureSpec,
    failure_schedule,
    fault_steps,
    repair_seconds,
)
from fabric.reliability.stats import proportion_ci
from fabric.scenario import ScenarioError, parse_scenario

BASE = """\
name = "f"
duration_s = 60

[[containers]]
name = "c"

[[workloads]]
kind = "vdisk-writer"
"""
NODES = [f"n{i}" for i in range(1, 7)]
RACKS = {n: f"r{i % 3}" for i, n in enumerate(NODES)}


def test_a_scenario_without_failures_schedules_none() -> None:
    s = parse_scenario(BASE)
    assert s.failures == FailureSpec() and not s.failures.active
    assert failure_schedule(s.failures, NODES, RACKS, 10 * YEAR_S, 1) == []


def test_the_failures_table_parses() -> None:
    s = parse_scenario(
        BASE
        + """
[failures]
node_afr = 0.05
disk_afr = 0.02
disks_per_node = 4
lifetime = "weibull"
weibull_shape = 1.5
transient_fraction = 0.3
rack_events_per_year = 0.2
rack_loss_fraction = 0.01
rebuild_bytes_per_s = 2e9
"""
    )
    f = s.failures
    assert (f.node_afr, f.disk_afr, f.disks_per_node, f.lifetime) == (0.05, 0.02, 4, "weibull")
    assert (f.weibull_shape, f.transient_fraction, f.rebuild_bytes_per_s) == (1.5, 0.3, 2e9)
    assert f.active


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("node_afr = 1.5", "failures.node_afr: must be 0..0.999"),
        ('lifetime = "lognormal"', "'lognormal' is not one of exponential, weibull"),
        ("weibull_shape = 2", 'only a lifetime = "weibull" has a shape'),
        ("rack_loss_fraction = 0.1", "needs rack_events_per_year > 0"),
        ("mttf = 3", "failures.mttf: unknown setting"),
        ("disks_per_node = 1.5", "must be an integer"),
    ],
)
def test_a_bad_failures_table_is_refused_naming_the_line(line: str, message: str) -> None:
    text = BASE + "\n[failures]\nnode_afr = 0.01\n" + line + "\n"
    text = text.replace("node_afr = 0.01\nnode_afr", "node_afr")  # the line under test wins
    lineno = text.splitlines().index(line) + 1
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "s.toml")
    assert message in str(err.value)
    if "unknown" not in message and "needs" not in message and "shape" not in message:
        assert f"s.toml:{lineno}:" in str(err.value), str(err.value)


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    spec = FailureSpec(node_afr=0.3, disk_afr=0.2, disks_per_node=2, transient_fraction=0.5)
    a = failure_schedule(spec, NODES, RACKS, 5 * YEAR_S, 7)
    assert a == failure_schedule(spec, NODES, RACKS, 5 * YEAR_S, 7)
    assert a != failure_schedule(spec, NODES, RACKS, 5 * YEAR_S, 8)
    assert [e.at_s for e in a] == sorted(e.at_s for e in a)
    assert all(0 <= e.at_s < 5 * YEAR_S for e in a)


@pytest.mark.parametrize(("lifetime", "shape"), [("exponential", 1.0), ("weibull", 0.7)])
def test_the_afr_is_the_share_of_nodes_failing_in_their_first_year(
    lifetime: str, shape: float
) -> None:
    spec = FailureSpec(node_afr=0.2, lifetime=lifetime, weibull_shape=shape)
    nodes = [f"n{i}" for i in range(4000)]
    events = failure_schedule(spec, nodes, {}, YEAR_S, 3)
    failed = {e.node for e in events if e.kind == "node-lost"}
    ci = proportion_ci(len(failed), len(nodes), 0.999)
    assert ci.contains(0.2), f"seed 3: {len(failed)} of 4000 failed in a year, {ci}"


def test_in_the_first_year_wear_out_fails_late_and_infant_mortality_early() -> None:
    """Same AFR, so as many fail within the year; the shape says when in it."""

    def mean_first_year_failure(shape: float) -> float:
        spec = FailureSpec(node_afr=0.5, lifetime="weibull", weibull_shape=shape)
        ev = failure_schedule(spec, [f"n{i}" for i in range(2000)], {}, YEAR_S, 5)
        return statistics.fmean(e.at_s for e in ev if e.kind == "node-lost") / YEAR_S

    assert mean_first_year_failure(3.0) > 0.6 > 0.4 > mean_first_year_failure(0.5)


def test_transient_failures_come_back_and_permanent_ones_are_replaced() -> None:
    spec = FailureSpec(
        node_afr=0.5, transient_fraction=0.5, transient_downtime_s=600, replacement_s=86400
    )
    events = failure_schedule(spec, [f"n{i}" for i in range(500)], {}, 3 * YEAR_S, 2)
    downs = [e for e in events if e.kind == "node-down"]
    lost = [e for e in events if e.kind == "node-lost"]
    share = len(downs) / (len(downs) + len(lost))
    assert 0.45 < share < 0.55, f"seed 2: {share:.3f} of failures transient"
    ups = {(e.node, round(e.at_s, 6)) for e in events if e.kind == "node-up"}
    assert all((d.node, round(d.at_s + 600, 6)) in ups for d in downs if d.at_s + 600 < 3 * YEAR_S)
    back = {(e.node, round(e.at_s, 6)) for e in events if e.kind == "node-replaced"}
    assert all((x.node, round(x.at_s + 86400, 6)) in back for x in lost if x.at_s < 2 * YEAR_S)


def test_a_rack_event_takes_the_whole_rack_and_loses_the_share_that_never_returns() -> None:
    spec = FailureSpec(rack_events_per_year=2.0, rack_loss_fraction=1.0, rack_downtime_s=3600)
    events = failure_schedule(spec, NODES, RACKS, 2 * YEAR_S, 4)
    strikes = [e for e in events if e.kind == "rack-down"]
    assert strikes, "seed 4: no rack event in two years at two a year"
    first = strikes[0]
    lost_then = {e.node for e in events if e.kind == "node-lost" and e.at_s == first.at_s}
    assert lost_then == {n for n in NODES if RACKS[n] == first.rack}
    none_lost = FailureSpec(rack_events_per_year=2.0, rack_loss_fraction=0.0)
    events = failure_schedule(none_lost, NODES, RACKS, 2 * YEAR_S, 4)
    assert not [e for e in events if e.kind == "node-lost"]
    assert len([e for e in events if e.kind == "rack-up"]) >= len(strikes) - 3


def test_the_schedule_becomes_the_simulators_fault_steps() -> None:
    spec = FailureSpec(
        node_afr=0.9, disk_afr=0.9, disks_per_node=2, transient_fraction=0.5, rack_events_per_year=1
    )
    events = failure_schedule(spec, NODES, RACKS, YEAR_S, 9)
    steps = fault_steps(events, RACKS, {n: ["disk0", "disk1"] for n in NODES})
    kinds = {s.kind for s in steps}
    assert kinds == {"node-kill", "disk-fail"}, f"seed 9: {kinds}"
    disk = next(s for s in steps if s.kind == "disk-fail")
    assert disk.params["disk"] in ("disk0", "disk1") and disk.source == "failures"
    kills = [s for s in steps if s.kind == "node-kill"]
    # A transient failure is a kill that lasts until the node is back (the runner starts
    # it again), a permanent one a kill without end; a node is never killed while down.
    assert any(s.duration_s for s in kills) and any(s.duration_s is None for s in kills)
    down_until: dict[str, float] = {}
    for s in kills:
        end = math.inf if s.duration_s is None else s.at_s + s.duration_s
        for node in s.target["nodes"]:
            assert down_until.get(node, -1.0) <= s.at_s, f"seed 9: {node} killed twice"
            down_until[node] = end


def test_a_node_lost_in_a_rack_outage_is_not_restarted_with_its_rack() -> None:
    spec = FailureSpec(rack_events_per_year=3.0, rack_loss_fraction=0.5, rack_downtime_s=3600)
    events = failure_schedule(spec, NODES, RACKS, YEAR_S, 4)
    steps = fault_steps(events, RACKS)
    lost = next(e for e in events if e.kind == "node-lost")
    up = next(e for e in events if e.kind == "rack-up" and e.at_s > lost.at_s)
    back = [
        s
        for s in steps
        if s.duration_s is not None and math.isclose(s.at_s + s.duration_s, up.at_s)
    ]
    assert back and all(lost.node not in s.target["nodes"] for s in back), f"seed 4: {back}"
    assert any(s.duration_s is None and lost.node in s.target["nodes"] for s in steps)


def test_repair_time_is_the_delay_then_the_bytes_at_the_slowest_rate() -> None:
    spec = FailureSpec(repair_delay_s=60, rebuild_bytes_per_s=1e9, rebuild_bytes_per_s_per_node=1e8)
    assert repair_seconds(spec, 1e12, helpers=5) == pytest.approx(60 + 1e12 / 5e8)
    assert repair_seconds(spec, 1e12, helpers=50) == pytest.approx(60 + 1e12 / 1e9)
    fixed = FailureSpec(repair_delay_s=60, repair_time_s=3600)
    assert repair_seconds(fixed, 1e15, helpers=1) == 3660
    assert math.isclose(repair_seconds(FailureSpec(repair_delay_s=0), 0, 1), 0)
