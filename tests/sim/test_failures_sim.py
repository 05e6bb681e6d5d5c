"""``[failures]`` in the full simulator: the failure model's schedule is played as node
kills, restarts and disk failures on the real node code, so the same scenario answers
through both models (``--model reliability`` draws the same schedule over years)."""

from __future__ import annotations

import json
from pathlib import Path

from fabric.scenario import failure_steps, parse_scenario, schedule
from shell.sim import runner

FAILING = """
name = "afr"
duration_s = 120

[cluster]
nodes = 6
voters = 3
racks = 3
down_after_ms = 3000

[[containers]]
name = "data"
rf = 2

[[workloads]]
kind = "vdisk-writer"
container = "data"
rate = 2
vdisk_bytes = 4194304

[failures]
node_afr = 0.999
lifetime = "weibull"
weibull_shape = 0.25           # infant mortality: failures come early
transient_fraction = 1.0
transient_downtime_s = 20
"""


def _seed_with_a_restart() -> int:
    """A seed whose schedule kills one node and brings it back well inside the run."""
    scenario = parse_scenario(FAILING, "afr")
    for seed in range(1, 200):
        steps = failure_steps(scenario, seed)
        if (
            len(steps) == 1
            and steps[0].kind == "node-kill"
            and len(steps[0].target["nodes"]) == 1
            and steps[0].at_s + (steps[0].duration_s or 1e9) < scenario.duration_s - 40
        ):
            return seed
    raise AssertionError("no seed in 1-199 schedules one kill that ends in the run")


def test_the_failure_model_joins_the_scripted_faults() -> None:
    scenario = parse_scenario(FAILING, "afr")
    seed = _seed_with_a_restart()
    steps = schedule(scenario, seed)
    assert [s for s in steps if s.source == "failures"] == failure_steps(scenario, seed)
    assert all(s.target["nodes"][0] in {f"n{i}" for i in range(1, 7)} for s in steps)
    quiet = parse_scenario(FAILING.split("[failures]")[0], "afr")
    assert schedule(quiet, seed) == [], f"seed {seed}: no [failures], no fault"


def test_fabric_sim_plays_the_failure_schedule_on_the_nodes(tmp_path: Path) -> None:
    seed = _seed_with_a_restart()
    path = tmp_path / "afr.toml"
    path.write_text(FAILING)
    result = runner.run(str(path), seed, str(tmp_path / "out"))
    summary = json.loads(Path(result.out, "summary.json").read_text())
    assert result.code == 0, f"seed {seed}: {summary['checks']}"
    expected = failure_steps(parse_scenario(FAILING, "afr"), seed)
    played = [(f["kind"], f["nodes"], round(f["end"] - f["start"], 6)) for f in summary["faults"]]
    want = [(s.kind, s.target["nodes"], round(s.duration_s or 0, 6)) for s in expected]
    assert played == want, f"seed {seed}: {summary['faults']}"
    killed = expected[0].target["nodes"][0]
    lines = Path(result.out, "events.jsonl").read_text().splitlines()
    moves = [e["message"] for e in map(json.loads, lines) if e["kind"] == "node_state"]
    assert f"node {killed}: DEGRADED -> DOWN" in " ".join(moves), f"seed {seed}: {moves}"
    assert moves[-1].startswith(f"node {killed}: DOWN -> UP"), f"seed {seed}: {moves}"
