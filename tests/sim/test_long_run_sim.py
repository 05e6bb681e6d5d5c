"""Long simulated runs: ``[cluster] timing = "long-run"``, a sparse timeline and stamped
payloads change what a run costs, not what it finds.

A cluster on the long-run timing still detects a killed node and rebuilds its data
(later: DOWN comes after 30 s instead of 4), answers writes as fast as the default
timing does (a write never waits for a heartbeat), samples the timeline at the period
asked, and keeps a small fraction of the bytes its stamped writer sent.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

from fabric.config import LARGE_CLUSTER_TIMEOUTS, LONG_RUN_TIMEOUTS
from shell.sim import runner

SEED = 3
KILL_AT_S = 20.0
LONG_RUN = f"""\
name = "long-run"
duration_s = 150
sample_every_s = 10

[cluster]
nodes = 6
voters = 3
timing = "long-run"
rebuild_delay_s = 1

[[containers]]
name = "data"
rf = 2
compression = "zstd"

[[workloads]]
kind = "vdisk-writer"
rate = 2
block_bytes = 262144
vdisk_bytes = 268435456
pattern = "sequential"
payload = "stamped"

[[faults.at]]
at_s = {KILL_AT_S}
kind = "node-kill"
target = {{ nodes = ["n6"] }}
"""


def run(tmp_path: Path, text: str) -> tuple[runner.SimResult, dict[str, Any], list[dict[str, Any]]]:
    path = tmp_path / "long.toml"
    path.write_text(text)
    result = runner.run(str(path), SEED, str(tmp_path / "out"))
    summary = json.loads(Path(result.out, "summary.json").read_text())
    lines = Path(result.out, "history.jsonl").read_text().splitlines()
    history = [json.loads(line) for line in lines]
    return result, summary, history


def _down_event(result: runner.SimResult) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """The run's events, its first "-> DOWN" one, and the silence that event reports."""
    lines = Path(result.out, "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    down = next(e for e in events if e["kind"] == "node_state" and "-> DOWN" in e["message"])
    silent_s = float(re.search(r"Raft answer for ([0-9.]+) s", down["message"])[1])  # type: ignore[index]
    return events, down, silent_s


def test_a_long_run_cluster_still_finds_and_heals_a_lost_node(tmp_path: Path) -> None:
    result, summary, history = run(tmp_path, LONG_RUN)
    assert result.code == 0, f"seed {SEED}: {summary['checks']}"
    assert "DOWN" in summary["observed"]["node_states"]["n6"], f"seed {SEED}"
    rebuild = summary["rebuild"]
    assert rebuild["rebuilt_bytes"] > 0, f"seed {SEED}: nothing rebuilt: {rebuild}"
    # The long-run timing is the one in force: DOWN only after its 30 s of silence, and
    # the rebuild after that.
    events, down, silent_s = _down_event(result)
    assert silent_s >= LONG_RUN_TIMEOUTS.down_after_ms / 1000, f"seed {SEED}: {down}"
    started = next(e for e in events if e["kind"] == "rebuild_started")
    assert started["at_wall"] >= down["at_wall"], f"seed {SEED}: {started}"
    # A write waits for its commit, never for the next (2 s) heartbeat.
    writes = sorted(
        op["complete"] - op["invoke"]
        for op in history
        if op["kind"] == "write" and op["outcome"] == "ok"
    )
    assert len(writes) > 200, f"seed {SEED}: the writer fell behind its rate: {len(writes)}"
    p99 = writes[int(0.99 * (len(writes) - 1))]
    assert statistics.median(writes) < 0.1 and p99 < 0.5, f"seed {SEED}: p99 {p99:.3f} s"


def test_the_timeline_is_sampled_at_the_period_asked_and_stamps_stay_small(
    tmp_path: Path,
) -> None:
    result, summary, _ = run(tmp_path, LONG_RUN.split("[[faults.at]]")[0])
    assert result.code == 0, f"seed {SEED}: {summary['checks']}"
    samples = Path(result.out, "samples.jsonl").read_text().splitlines()
    assert 14 <= len(samples) <= 17, f"seed {SEED}: {len(samples)} samples in 150 s at 10 s"
    savings = summary["savings"]
    assert savings["logical_bytes"] > 50 << 20, f"seed {SEED}: {savings}"
    assert savings["stored_bytes"] * 100 < savings["logical_bytes"], f"seed {SEED}: {savings}"


LARGE = (
    LONG_RUN.replace('timing = "long-run"', 'timing = "large-cluster"\nracks = 4')
    .replace("duration_s = 150", "duration_s = 900")
    .replace("nodes = 6\n", "nodes = 12\n")
    .replace('nodes = ["n6"]', 'nodes = ["n12"]')
    .replace("rate = 2\n", "rate = 0.5\n")
    + """
[[faults.at]]
at_s = 60
kind = "node-restart"
target = { nodes = ["n11"] }
"""
)


def test_a_large_cluster_timing_finds_a_lost_node_in_minutes_and_heals_it(
    tmp_path: Path,
) -> None:
    """``timing = "large-cluster"``: learners hear a heartbeat every 90 s and the leader's
    own loops sleep on every other node, yet a killed node is DOWN after its 10 minutes
    of silence and rebuilt, and a restarted learner, told of the leader by no heartbeat for
    a while, reports in before anyone calls it DEGRADED."""
    result, summary, _ = run(tmp_path, LARGE)
    assert result.code == 0, f"seed {SEED}: {summary['checks']}"
    states = summary["observed"]["node_states"]
    assert "DOWN" in states["n12"], f"seed {SEED}: {states['n12']}"
    assert set(states["n11"]) == {"UP"}, f"seed {SEED}: the restarted node: {states['n11']}"
    assert summary["rebuild"]["rebuilt_bytes"] > 0, f"seed {SEED}: {summary['rebuild']}"
    _, down, silent_s = _down_event(result)
    assert silent_s >= LARGE_CLUSTER_TIMEOUTS.down_after_ms / 1000, f"seed {SEED}: {down}"
