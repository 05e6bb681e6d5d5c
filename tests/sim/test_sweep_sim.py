"""Sweeps end to end: every point x seed on local processes or a Dask cluster, one table."""

from __future__ import annotations

import concurrent.futures as cf
import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shell.sim import sweep
from shell.sim.sweep import run_sweep

SCENARIO = """
name = "two-racks-down"
duration_s = 60

[cluster]
nodes = 9
racks = 3

[[containers]]
name = "data"
rf = 2

[[workloads]]
kind = "vdisk-writer"

[[faults.at]]
at_s = 10
kind = "node-kill"            # two nodes, for good
target = { nodes = ["n1", "n2"] }
"""
SWEEP = "rf=2,3"
SEEDS = "1-3"


@pytest.fixture
def scenario(tmp_path: Path) -> str:
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    return str(path)


def _files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("sweep.csv", "sweep.md", "runs.jsonl")}


def test_a_local_sweep_writes_one_table_ordered_by_point_then_seed(
    scenario: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert run_sweep(scenario, SWEEP, SEEDS, str(out), "placement", workers=2) == 0
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [(r["point"]["rf"], r["seed"]) for r in runs] == [
        (rf, seed) for rf in (2, 3) for seed in (1, 2, 3)
    ]
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(r["rf"], r["runs"], r["failed"]) for r in rows] == [("2", "3", "0"), ("3", "3", "0")]
    # n1 and n2 sit in racks r1 and r2: RF2 groups on exactly those two die, RF3 ones never
    # (a third copy in r3); the table says so with an interval, and RF3 costs 3x.
    rf2, rf3 = rows
    assert float(rf2["lost_fraction"]) > 0 and float(rf3["lost_fraction"]) == 0
    assert float(rf3["data_lost_high"]) < 1, "0 of 3 is an interval, not a certainty"
    assert (rf2["storage_overhead"], rf3["storage_overhead"]) == ("2.0", "3.0")
    assert rf2["repair_inside_racks_per_byte"] == "0.0"
    assert float(rf3["repair_across_racks_per_byte"]) > float(rf2["repair_across_racks_per_byte"])
    md = (out / "sweep.md").read_text()
    assert "| rf | runs | failed | data_lost |" in md and "two-racks-down" in md
    assert {p.name for p in (out / "plots").iterdir()} >= {
        "data_lost.png",
        "lost_fraction.png",
        "storage_overhead.png",
        "repair_across_racks_per_byte.png",
    }
    printed = capsys.readouterr()
    assert "| rf |" in printed.out and "6 runs, 0 failed" in printed.err


def test_a_failing_run_is_an_error_row_and_the_sweep_goes_on(
    scenario: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    model = "tests.sim.sweep_models:flaky"
    assert run_sweep(scenario, SWEEP, SEEDS, str(out), model, workers=2) == 1
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    errors = [(r["point"]["rf"], r["seed"], r.get("error")) for r in runs if "error" in r]
    assert errors == [
        (2, 2, "RuntimeError: broken on purpose at seed 2"),
        (3, 2, "RuntimeError: broken on purpose at seed 2"),
    ]
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(r["failed"], r["seed_n"], r["seed"]) for r in rows] == [("1", "2", "2.0")] * 2
    err = capsys.readouterr().err
    assert "6 runs, 2 failed" in err
    assert f"replay: fabric sim {scenario} --model {model} --sweep 'rf=2' --seeds 2" in err


@pytest.mark.parametrize(
    ("sweep_text", "seeds", "model", "message"),
    [
        ("copies=2", SEEDS, "placement", "copies: not a sweepable key"),
        ("rf=2", "9-1", "placement", "seeds: 9-1 runs backwards"),
        ("rf=2", SEEDS, "nope", "unknown model 'nope'"),
        ("nodes=2", SEEDS, "placement", "nodes=2: 3 racks but only 2 nodes"),
    ],
)
def test_a_bad_sweep_stops_before_any_run(
    scenario: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sweep_text: str,
    seeds: str,
    model: str,
    message: str,
) -> None:
    assert run_sweep(scenario, sweep_text, seeds, str(tmp_path / "o"), model) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


class _Recording(cf.Executor):
    """Runs each job at once, in the caller's thread, and counts jobs not yet taken."""

    def __init__(self) -> None:
        self.outstanding = self.most = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        future.set_result(fn(*args, **kwargs))
        self.outstanding += 1
        self.most = max(self.most, self.outstanding)
        return future


def test_submissions_stay_within_the_window_however_many_seeds(scenario: str) -> None:
    executor = _Recording()
    seeds = list(range(1, 61))
    taken = 0
    for _ in sweep._outcomes(executor, 8, scenario, [{"rf": 2}], seeds, "placement"):
        executor.outstanding -= 1
        taken += 1
    assert taken == 60 and executor.most <= 8


def test_a_dask_cluster_gives_the_same_table_bytes_as_local_processes(
    scenario: str, tmp_path: Path
) -> None:
    from distributed import LocalCluster

    local, dask = tmp_path / "local", tmp_path / "dask"
    assert run_sweep(scenario, SWEEP, SEEDS, str(local), "placement", workers=2) == 0
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        code = run_sweep(
            scenario, SWEEP, SEEDS, str(dask), "placement", scheduler=cluster.scheduler_address
        )
    assert code == 0
    assert _files(dask) == _files(local)


def test_a_run_that_kills_its_worker_process_costs_its_neighbours_not_the_sweep(
    scenario: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    model = "tests.sim.sweep_models:crash"
    assert run_sweep(scenario, "rf=2", "1-100", str(out), model, workers=1) == 1
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in runs] == list(range(1, 101))
    crashed = [r["seed"] for r in runs if "error" in r]
    assert 2 in crashed and "worker process died" in runs[1]["error"]
    # The pool starts again: runs submitted after the crash (past the window) succeed.
    assert runs[-1]["metrics"] == {"seed": 100.0}
    assert f"{len(crashed)} failed" in capsys.readouterr().err


def test_a_key_the_model_ignores_is_refused(
    scenario: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The placement model has no time: sweeping the rebuild rate would print the same
    row at every rate, as if the rate did not matter."""
    assert run_sweep(scenario, "rebuild_rate=50,200", SEEDS, str(tmp_path), "placement") == 2
    assert "rebuild_rate: the placement model does not use it" in capsys.readouterr().err


def test_the_sweep_runs_from_the_command_line_with_plain_progress_lines(
    scenario: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    out = tmp_path / "cli"
    args = [sys.executable, "-m", "shell.cli", "sim", scenario, "-o", str(out)]
    args += ["--model", "placement", "--sweep", "rf=2,3", "--seeds", "1-5", "--workers", "2"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "sweep: 10/10 runs, 0 failed" in done.stderr.splitlines()
    assert "\r" not in done.stderr, "no bar when stderr is not a terminal"
    assert done.stdout.startswith("| rf | runs | failed |")
    assert (out / "sweep.csv").exists() and (out / "plots" / "data_lost.png").exists()


FULL = """
name = "one-node-lost"
duration_s = 30

[cluster]
nodes = 4
down_after_ms = 2000
rebuild_delay_s = 1

[[containers]]
name = "data"
rf = 2

[[workloads]]
kind = "vdisk-writer"           # whole extents in order: groups fill and seal
rate = 8
block_bytes = 1048576
vdisk_bytes = 268435456
pattern = "sequential"

[[faults.at]]
at_s = 12
kind = "node-kill"
target = { nodes = ["n4"] }
"""


def test_a_sweep_of_the_full_model_runs_the_real_node_code_at_each_point(
    tmp_path: Path,
) -> None:
    """``--model full``: every run is the scenario on the simulated cluster; its summary's
    figures are the sweep's metrics (a lost node rebuilt at both factors, checks passed)."""
    path = tmp_path / "full.toml"
    path.write_text(FULL)
    out = tmp_path / "full"
    code = run_sweep(str(path), "rf=2,3", "1", str(out), "full", workers=2)
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert code == 0, rows
    assert [r["point"]["rf"] for r in rows] == [2, 3]
    for r in rows:
        m = r["metrics"]
        assert m["passed"] == 1.0 and m["acknowledged_writes_lost"] == 0, r
        assert m["rebuilt_bytes"] > 0 and m["simulated_s"] > 30, r


def test_a_sweep_of_the_reliability_model_responds_to_the_failure_rate(tmp_path: Path) -> None:
    """``--model reliability`` over ``node_afr``: one 10-year trial per seed, and nodes
    that fail ten times as often cost about ten times the repair bytes."""
    path = Path(__file__).parents[2] / "configs" / "reliability" / "high-afr.toml"
    out = tmp_path / "rel"
    code = run_sweep(str(path), "node_afr=0.05,0.5", "1-4", str(out), "reliability", workers=1)
    assert code == 0
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    by_afr: dict[float, list[float]] = {}
    for r in rows:
        by_afr.setdefault(r["point"]["node_afr"], []).append(
            r["metrics"]["rf2.repair_bytes_per_year"]
        )
    low, high = (sum(by_afr[a]) / len(by_afr[a]) for a in (0.05, 0.5))
    assert 3 * low < high, by_afr
