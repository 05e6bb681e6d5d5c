"""The scenario format: parsed whole, refused with the line of the key at fault; the
nemesis schedule a pure function of the spec and the seed."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import zstandard

from fabric.config import LONG_RUN_TIMEOUTS, ConfigError
from fabric.scenario import ScenarioError, parse_scenario, schedule
from shell import launcher
from shell.experiment import runner
from shell.experiment.workloads import block_payload

GOOD = """\
name = "demo"
duration_s = 60

[cluster]
nodes = 5
racks = 2
voters = 3

[[containers]]
name = "bench"
rf = 2
ec = "2+1"
compression = "zstd"

[[workloads]]
kind = "vdisk-writer"
container = "bench"
concurrency = 2
block_bytes = 65536

[[workloads]]
kind = "kv-cas"
keys = 2

[[faults.at]]
at_s = 5
kind = "node-kill"
target = { select = "follower" }
duration_s = 10

[faults.nemesis]
kinds = ["node-pause", "net-delay"]
mean_interval_s = 4
targets = ["one", { nodes = ["n1"] }]
duration_s = 2

[faults.nemesis.params.net-delay]
ms = 50

[checks]
max_unavailability_s = 5
"""


def test_a_full_scenario_parses() -> None:
    s = parse_scenario(GOOD, "demo.toml")
    assert s.name == "demo" and s.duration_s == 60
    assert (s.cluster.nodes, s.cluster.racks, s.cluster.voters) == (5, 2, 3)
    assert s.containers[0].ec == "2+1" and s.containers[0].compression == "zstd"
    assert [w.kind for w in s.workloads] == ["vdisk-writer", "kv-cas"]
    assert s.workloads[1].name == "kv-cas-2" and s.workloads[1].keys == 2
    assert s.script[0].target == {"select": "follower"} and s.script[0].duration_s == 10
    assert s.nemesis is not None and s.nemesis.params == {"net-delay": {"ms": 50}}
    assert s.checks.max_unavailability_s == 5


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("rf = 2", "rf = 4", "demo.toml:11: containers[0].rf: must be 1..3"),
        ('ec = "2+1"', 'ec = "two"', "demo.toml:12: containers[0].ec"),
        ('kind = "kv-cas"', 'kind = "kv"', "demo.toml:22: workloads[1].kind"),
        ("concurrency = 2", "concurrency = true", "demo.toml:18: workloads[0].concurrency"),
        ('kind = "node-kill"', 'kind = "node-boom"', "demo.toml:27: faults.at[0].kind"),
        ('select = "follower"', 'select = "someone"', "demo.toml:28: faults.at[0].target"),
        ("at_s = 5", "at_s = 500", "demo.toml:26: faults.at[0].at_s: must be 0..60"),
        ('"net-delay"]', '"net-slow"]', "demo.toml:32: faults.nemesis.kinds"),
        ("max_unavailability_s = 5", "max_unavail = 5", "demo.toml:41: checks.max_unavail"),
        ("voters = 3", "voters = 9", "demo.toml:7: cluster.voters"),
        ('container = "bench"', 'container = "nope"', "demo.toml:17: workloads[0].container"),
    ],
)
def test_errors_name_the_line_and_key(old: str, new: str, where: str) -> None:
    assert old in GOOD
    with pytest.raises(ScenarioError) as err:
        parse_scenario(GOOD.replace(old, new, 1), "demo.toml")
    assert str(err.value).startswith(where), str(err.value)


def test_a_required_key_points_at_its_table() -> None:
    with pytest.raises(ScenarioError, match=r"^demo.toml:25: faults.at\[0\].at_s: is required"):
        parse_scenario(GOOD.replace("at_s = 5\n", ""), "demo.toml")


def test_missing_duration_and_workloads_and_bad_toml() -> None:
    with pytest.raises(ScenarioError, match="duration_s: is required"):
        parse_scenario("[[workloads]]\nkind = 'kv-cas'\n", "x.toml")
    with pytest.raises(ScenarioError, match="at least one"):
        parse_scenario("duration_s = 5\n", "x.toml")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        parse_scenario("duration_s = \n", "x.toml")


def test_the_nemesis_schedule_is_a_function_of_the_seed() -> None:
    s = parse_scenario(GOOD, "demo.toml")
    first = schedule(s, seed=7)
    assert first == schedule(s, seed=7)
    assert first != schedule(s, seed=8)
    nemesis = [f for f in first if f.source == "nemesis"]
    assert nemesis, "a 60 s run with a 4 s mean interval gets faults"
    for a, b in itertools.pairwise(nemesis):
        assert a.duration_s is not None and a.at_s + a.duration_s <= b.at_s, "no overlap"
    assert all(f.at_s + (f.duration_s or 0) <= s.duration_s for f in nemesis)
    assert {f.kind for f in nemesis} <= {"node-pause", "net-delay"}
    delays = [f for f in nemesis if f.kind == "net-delay"]
    assert all(f.params == {"ms": 50} for f in delays)
    assert [f.at_s for f in first] == sorted(f.at_s for f in first)
    assert any(f.source == "script" and f.at_s == 5 for f in first)


def test_a_scaled_scenario_tells_the_same_story_faster() -> None:
    from fabric.scenario import parse_scenario, scaled, schedule

    text = """
duration_s = 100
[cluster]
nodes = 3
[[workloads]]
kind = "kv-cas"
[[faults.at]]
at_s = 20
kind = "node-kill"
target = "one"
duration_s = 40
[faults.nemesis]
kinds = ["net-delay"]
mean_interval_s = 10
duration_s = 8
[checks]
max_unavailability_s = 5
"""
    full = parse_scenario(text)
    short = scaled(full, 0.25)
    assert short.duration_s == 25 and short.script[0].at_s == 5 and short.script[0].duration_s == 10
    assert short.nemesis is not None and short.nemesis.duration_s == 2
    assert short.checks.max_unavailability_s == 5  # how fast the fabric reacts does not scale
    assert all(s.at_s + (s.duration_s or 0) <= short.duration_s for s in schedule(short, 3))


def test_the_settings_shipped_scenarios_need() -> None:
    text = """
duration_s = 60
[cluster]
nodes = 3
scrub_cycle_s = 5
scrub_bytes_per_s = 0
[[containers]]
name = "cold"
ec = "2+1"
ec_delay_s = 0
[[workloads]]
kind = "image-import"
drop_probability = 0.3
[checks]
checkers = ["images"]
"""
    s = parse_scenario(text)
    assert (s.cluster.scrub_cycle_s, s.cluster.scrub_bytes_per_s) == (5, 0)
    assert s.containers[0].ec_delay_s == 0
    assert s.workloads[0].drop_probability == 0.3
    assert s.checks.checkers == ("images",)
    defaults = parse_scenario(GOOD)
    assert defaults.cluster.scrub_cycle_s < 0 and defaults.containers[0].ec_delay_s is None


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ('ec = "2+1"\nec_delay_s = 0', "ec_delay_s = 0", "ec_delay_s"),
        ("drop_probability = 0.3", "drop_probability = 0.9", "drop_probability"),
        ("scrub_cycle_s = 5", "scrub_cycle_s = 0.5", "scrub_cycle_s"),
    ],
)
def test_the_new_settings_are_refused_out_of_place(old: str, new: str, where: str) -> None:
    text = """
duration_s = 60
[cluster]
scrub_cycle_s = 5
[[containers]]
name = "cold"
ec = "2+1"
ec_delay_s = 0
[[workloads]]
kind = "image-import"
drop_probability = 0.3
"""
    with pytest.raises(ScenarioError, match=where):
        parse_scenario(text.replace(old, new))


def test_a_flaky_source_belongs_to_an_import() -> None:
    text = 'duration_s = 9\n[[workloads]]\nkind = "kv-cas"\ndrop_probability = 0.1\n'
    with pytest.raises(ScenarioError, match="only an image-import"):
        parse_scenario(text)


def test_a_scenario_may_ask_for_a_thousand_nodes_in_forty_racks() -> None:
    """Big clusters are for ``fabric sim``; ``fabric run`` refuses them (below)."""
    s = parse_scenario(GOOD.replace("nodes = 5", "nodes = 1000").replace("racks = 2", "racks = 40"))
    assert (s.cluster.nodes, s.cluster.racks) == (1000, 40)
    with pytest.raises(ScenarioError, match=r"cluster\.nodes: must be 1\.\.10000"):
        parse_scenario(GOOD.replace("nodes = 5", "nodes = 10001"), "demo.toml")


def test_fabric_run_refuses_more_node_processes_than_one_machine_takes(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text(GOOD.replace("nodes = 5", "nodes = 16"))
    with pytest.raises(
        ScenarioError, match=r"16 nodes; `fabric run` starts at most 15 .*fabric sim"
    ):
        runner.run(str(path), 1, str(tmp_path / "out"), None)
    assert not (tmp_path / "out" / "cluster").exists()


def test_fabric_up_refuses_more_node_processes_than_one_machine_takes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--nodes 16: must be 1..15 .*fabric sim"):
        launcher.prepare(launcher.ClusterDir(str(tmp_path)), None, 16, lambda _: None)


def test_long_run_timing_stamped_payloads_and_the_sample_period_parse() -> None:
    text = GOOD.replace("voters = 3\n", 'voters = 3\ntiming = "long-run"\n', 1)
    text = text.replace("block_bytes = 65536\n", 'block_bytes = 65536\npayload = "stamped"\n', 1)
    s = parse_scenario("sample_every_s = 30\n" + text, "demo.toml")
    assert (s.cluster.timing, s.workloads[0].payload, s.sample_every_s) == (
        "long-run",
        "stamped",
        30.0,
    )
    cfg = runner.scenario_config(s)
    assert cfg.timeouts == LONG_RUN_TIMEOUTS and cfg.timeouts.background_scale > 1
    # The defaults stay what every shipped scenario ran with.
    plain = parse_scenario(GOOD, "demo.toml")
    assert (plain.cluster.timing, plain.workloads[0].payload, plain.sample_every_s) == (
        "default",
        "random",
        1.0,
    )
    assert runner.scenario_config(plain).timeouts.background_scale == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("voters = 3\n", 'voters = 3\ntiming = "fast"\n'), "cluster.timing: 'fast' is not one of"),
        (("keys = 2\n", 'keys = 2\npayload = "stamped"\n'), "workloads[1].payload: only a vdisk"),
        (("block_bytes = 65536\n", 'block_bytes = 65536\npayload = "zero"\n'), "payload"),
        (('name = "demo"\n', 'name = "demo"\nsample_every_s = 0.5\n'), "sample_every_s"),
    ],
)
def test_unknown_timings_and_payloads_are_refused(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(GOOD.replace(*change, 1), "demo.toml")
    assert message in str(err.value)


def test_a_stamped_block_is_its_stamp_repeated_and_differs_per_block() -> None:
    spec = parse_scenario(
        GOOD.replace("block_bytes = 65536\n", 'block_bytes = 1000\npayload = "stamped"\n'),
        "demo.toml",
    ).workloads[0]
    rng = random.Random(5)
    first, second = block_payload(rng, spec), block_payload(rng, spec)
    assert len(first) == len(second) == 1000
    assert first[:16] * 62 + first[:8] == first and first != second
    assert len(zstandard.compress(first)) < 100  # what a zstd container keeps of it
