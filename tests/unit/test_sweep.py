"""The sweep grammar (``--sweep``, ``--seeds``) and how a point changes a scenario."""

from __future__ import annotations

import pytest

from fabric.scenario import parse_scenario
from fabric.sweep import SweepError, apply, label, parse_seeds, parse_sweep, points
from shell.experiment.runner import cluster_config

SCENARIO = """
duration_s = 30
[cluster]
nodes = 5
voters = 3
[[containers]]
name = "a"
rf = 2
[[containers]]
name = "b"
rf = 2
ec = "2+1"
[[workloads]]
kind = "vdisk-writer"
container = "a"
"""


def test_values_are_typed_per_key_and_points_are_the_cartesian_product() -> None:
    grid = parse_sweep("rf=2,3  ec=4+2,none rebuild_rate=50,200.5")
    assert grid == {"rf": (2, 3), "ec": ("4+2", "none"), "rebuild_rate": (50.0, 200.5)}
    pts = points(grid)
    assert len(pts) == 8
    # The first key varies slowest: the table reads point by point as the user wrote it.
    assert [label(p) for p in pts[:3]] == [
        "rf=2 ec=4+2 rebuild_rate=50",
        "rf=2 ec=4+2 rebuild_rate=200.5",
        "rf=2 ec=none rebuild_rate=50",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rf=2,4", "rf: 4 is not in 1..3"),
        ("rf=two", "rf: 'two' is not an integer"),
        ("ec=4-2", "ec: '4-2' is not k+m"),
        ("ec=20+2", "ec: '20+2' is not k+m"),
        ("rebuild_rate=-5", "rebuild_rate: '-5' is not a number"),
        ("replicas=2", "replicas: not a sweepable key (rf, ec, policy, rebuild_rate,"),
        ("rf", "'rf': write key=value,value"),
        ("rf=2 rf=3", "rf: given twice"),
        ("rf=2,2", "rf: 2 given twice"),
        ("rf=", "rf: '' is not an integer"),
        ("  ", "an empty sweep"),
        (
            "nodes="
            + ",".join(str(n) for n in range(1, 101))
            + " racks="
            + ",".join(str(n) for n in range(101))
            + " rf=1,2",
            "points: a sweep has at most 10000",
        ),
    ],
)
def test_a_bad_sweep_is_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(SweepError) as exc:
        parse_sweep(text)
    assert message in str(exc.value)


def test_seeds_take_one_a_range_a_list_or_a_mix() -> None:
    assert parse_seeds("7") == [7]
    assert parse_seeds("1-1000") == list(range(1, 1001))
    assert parse_seeds("1,5,9") == [1, 5, 9]
    assert parse_seeds("1-3, 9") == [1, 2, 3, 9]
    for bad, why in [("3-1", "runs backwards"), ("x", "'x' is not N or A-B"), ("1-3,2", "twice")]:
        with pytest.raises(SweepError, match=why):
            parse_seeds(bad)


def test_a_point_sets_every_container_and_the_clusters_rebuild_settings() -> None:
    s = parse_scenario(SCENARIO)
    p = apply(s, {"rf": 3, "ec": "none", "rebuild_rate": 50.0, "rebuild_delay_s": 2.0})
    assert [(c.rf, c.ec) for c in p.containers] == [(3, ""), (3, "")]
    assert p.cluster.rebuild_bytes_per_s == 50_000_000
    # ... and the cluster the scenario runs on gets that rate (fabric run, fabric sim).
    cfg = cluster_config(p)
    assert (cfg.rebuild.bytes_per_s, cfg.rebuild.delay_s) == (50_000_000, 2.0)
    coded = apply(s, {"ec": "4+2"})
    assert [c.ec for c in coded.containers] == ["4+2", "4+2"]
    assert s.containers[0].rf == 2, "apply returns a new scenario"


def test_a_scenario_file_sets_the_rebuild_rate_too() -> None:
    s = parse_scenario(SCENARIO.replace("voters = 3", "voters = 3\nrebuild_bytes_per_s = 7"))
    assert s.cluster.rebuild_bytes_per_s == 7
    assert parse_scenario(SCENARIO).cluster.rebuild_bytes_per_s == -1


def test_nodes_and_racks_resize_the_cluster_and_impossible_points_are_refused() -> None:
    s = parse_scenario(SCENARIO)
    small = apply(s, {"nodes": 2, "racks": 2})
    assert (small.cluster.nodes, small.cluster.voters, small.cluster.racks) == (2, 2, 2)
    with pytest.raises(SweepError, match="nodes=2 racks=3: 3 racks but only 2 nodes"):
        apply(s, {"nodes": 2, "racks": 3})
    from_file = parse_scenario(SCENARIO.replace("nodes = 5\nvoters = 3", 'config = "c.toml"'))
    with pytest.raises(SweepError, match=r"nodes: the scenario's cluster comes from 'c\.toml'"):
        apply(from_file, {"nodes": 4})
    bare = parse_scenario('duration_s = 9\n[[workloads]]\nkind = "kv-cas"\n')
    with pytest.raises(SweepError, match=r"rf: the scenario has no \[\[containers\]\]"):
        apply(bare, {"rf": 2})


def test_policy_puts_replication_and_erasure_codes_on_one_axis() -> None:
    grid = parse_sweep("policy=rf3,4+2,6+3")
    s = parse_scenario(SCENARIO)
    applied = [apply(s, p).containers[1] for p in points(grid)]
    assert [(c.rf, c.ec) for c in applied] == [(3, ""), (2, "4+2"), (2, "6+3")]
    for bad in ("rf4", "none", "4"):
        with pytest.raises(SweepError, match=f"policy: '{bad}' is not rf1..rf3 nor k"):
            parse_sweep(f"policy={bad}")
