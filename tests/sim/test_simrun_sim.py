"""``fabric sim``: a scenario of ``fabric run`` on the simulator, replayed by its seed.

The node-loss scenario runs in a short form (its schedule at 3 %: the kill at 1.2 s of
2.7) twice with seed 7 and once with seed 8. The two seed-7 runs write the same
report, byte for byte, plots included, and print the same trace hash; seed 8 tells
another story. A cluster broken on purpose (``[debug] ack_before_commit``: the writer
answers before its metadata commits) loses an acknowledged write to a power cut, the
blocks checker says so, the run exits 1 and prints the command that replays it.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from fabric.config import DebugSettings, render_config
from shell.experiment.report import FILES
from shell.sim import runner
from tests.sim.conftest import config

ROOT = Path(__file__).resolve().parents[2]
NODE_LOSS = str(ROOT / "configs" / "scenarios" / "node-loss.toml")
SHORT = 0.03


@pytest.fixture(scope="module")
def node_loss(tmp_path_factory: pytest.TempPathFactory) -> dict[str, runner.SimResult]:
    out = tmp_path_factory.mktemp("node-loss")
    return {
        name: runner.run(NODE_LOSS, seed, str(out / name), SHORT)
        for name, seed in (("a", 7), ("b", 7), ("other", 8))
    }


def _files(root: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


def test_the_same_seed_writes_the_same_report_byte_for_byte(
    node_loss: dict[str, runner.SimResult],
) -> None:
    a, b = node_loss["a"], node_loss["b"]
    assert a.code == 0, f"seed 7: node-loss failed in simulation; replay: {a.out}"
    assert a.trace == b.trace, "seed 7: two runs of the same code gave two traces"
    names = _files(a.out)
    assert set(FILES) <= set(names), f"seed 7: report files missing from {names}"
    assert names == _files(b.out)
    _, mismatch, errors = filecmp.cmpfiles(a.out, b.out, names, shallow=False)
    assert not mismatch and not errors, f"seed 7: files differ between two runs: {mismatch}"
    summary = json.loads(Path(a.out, "summary.json").read_text())
    assert summary["trace"] == a.trace and summary["seed"] == 7
    assert summary["elapsed_s"] == round(a.simulated_s, 1), "the report holds virtual time"
    assert summary["faults"][0]["kind"] == "node-kill" and summary["faults"][0]["via"] == "api"
    assert summary["ops"]["ok"] > 0


def test_another_seed_gives_another_trace(node_loss: dict[str, runner.SimResult]) -> None:
    assert node_loss["other"].trace != node_loss["a"].trace, "seeds 7 and 8 ran the same run"


def test_buggify_runs_the_scenario_with_points_firing_and_replays_them(
    tmp_path: Path, node_loss: dict[str, runner.SimResult]
) -> None:
    """``fabric sim --buggify``: the nodes misbehave on purpose where the seed says, the
    scenario still passes, the summary counts what fired, and the run replays."""
    runs = [runner.run(NODE_LOSS, 7, str(tmp_path / n), SHORT, buggify=True) for n in "ab"]
    assert runs[0].code == 0, "seed 7 --buggify: node-loss failed; replay: " + runs[0].out
    assert runs[0].trace == runs[1].trace, "seed 7 --buggify: two runs, two traces"
    assert runs[0].trace != node_loss["a"].trace, "seed 7: --buggify changed nothing"
    fired = json.loads(Path(runs[0].out, "summary.json").read_text())["buggify_fired"]
    assert sum(fired.values()) > 0, f"seed 7 --buggify: no point fired: {fired}"


BROKEN = """\
# Broken on purpose: the writer answers before its metadata commits.
name = "broken"
duration_s = 5

[cluster]
config = "cluster.toml"

[[containers]]
name = "bench"
rf = 2

[[workloads]]
kind = "vdisk-writer"
container = "bench"
vdisk_bytes = 1048576

[[workloads]]
kind = "vdisk-reader"
container = "bench"

[[faults.at]]
at_s = 1
kind = "disk-slow"              # every fsync 30 ms: the commit an acknowledgement skipped is slow
target = "all"
params = { ms = 30, ops = ["fsync"] }

[[faults.at]]
at_s = 2
kind = "node-restart"           # a power cut on every node at once
target = "all"

[[faults.at]]
at_s = 2.9
kind = "node-restart"
target = "all"

[checks]
checkers = ["blocks"]
"""


BROKEN_SEEDS = range(1, 13)
"""Seeds to try: at some, no read asks for the write the broken cluster lost, and which
ones depends on the timing of this version (at the time of writing, the first fails)."""


def test_a_cluster_that_acknowledges_before_commit_fails_with_its_replay_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = replace(config(5), debug=DebugSettings(ack_before_commit=True))
    (tmp_path / "cluster.toml").write_text(render_config(broken))
    scenario = tmp_path / "broken.toml"
    scenario.write_text(BROKEN)
    for seed in BROKEN_SEEDS:
        result = runner.run(str(scenario), seed, str(tmp_path / "out"), 1.0)
        out = capsys.readouterr().out
        if result.code != 0:
            break
    else:
        pytest.fail(f"the broken cluster passed at every seed of {BROKEN_SEEDS}")
    assert result.code == 1, f"seed {seed}: not a check failure:\n{out}"
    assert "blocks: fail - acknowledged write lost" in out
    assert f"replay: fabric sim {scenario} --seed {seed}\n" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["passed"] is False and summary["acknowledged_writes_lost"] >= 1


SHRINK_SEEDS = range(1, 41)
"""Where to look for a seed that loses a write with the noise and without (at the time of
writing, 14 is the first; a loss shows at about one seed in six)."""
NOISE = """

[[faults.at]]
at_s = 3.6
kind = "net-duplicate"          # noise, after the power cuts
target = { nodes = ["n3"] }
duration_s = 1
"""


def test_shrink_drops_the_faults_a_failure_does_not_need_and_writes_a_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fabric sim --shrink``: the broken cluster's lost write under four faults shrinks
    to fewer, written as a scenario that fails the same way (1-minimality itself:
    tests/unit/test_shrink.py)."""
    from shell.sim import swarm

    broken = replace(config(5), debug=DebugSettings(ack_before_commit=True))
    (tmp_path / "cluster.toml").write_text(render_config(broken))
    scenario = tmp_path / "broken.toml"
    scenario.write_text(BROKEN.replace("[checks]", NOISE + "\n[checks]"))
    quiet = tmp_path / "quiet.toml"
    quiet.write_text(BROKEN)
    # A seed at which a read sees the lost write both with the noise and without it: the
    # four faults are then not 1-minimal, so the shrinker must drop one (which one is its
    # path's; which seeds qualify depends on this version's timing).
    seed = next(
        (
            s
            for s in SHRINK_SEEDS
            if all(
                runner.run(str(path), s, str(tmp_path / "try"), 1.0).code == 1
                for path in (quiet, scenario)
            )
        ),
        None,
    )
    capsys.readouterr()
    assert seed is not None, f"no seed of {SHRINK_SEEDS} loses a write with and without noise"
    out = tmp_path / "shrink"
    assert swarm.run_shrink(str(scenario), seed, str(out), max_runs=40) == 0
    said = capsys.readouterr().err
    shrunk = out / "shrunk.toml"
    assert shrunk.exists(), f"seed {seed}: no shrunk schedule:\n{said}"
    text = shrunk.read_text()
    kinds = [f["kind"] for f in tomllib.loads(text)["faults"]["at"]]
    assert 1 <= len(kinds) < 4, f"seed {seed}: nothing was dropped: {kinds}\n{said}"
    (tmp_path / "shrunk.toml").write_text(text)  # beside its cluster.toml
    again = runner.run(str(tmp_path / "shrunk.toml"), seed, str(tmp_path / "again"), 1.0)
    assert again.code == 1, f"seed {seed}: the shrunk schedule passes:\n{text}"
    assert swarm.failure_of(again.out, again.code) == ("blocks",)


def test_a_swarm_gives_each_seed_its_own_mix_and_replays_one(tmp_path: Path) -> None:
    """``fabric sim --swarm``: per seed a fault mix of its own, one line each, the runs
    pass on honest nodes, and a seed's run is the same under its replay."""
    from shell.sim import swarm

    code = swarm.run_swarm(NODE_LOSS, "1-2", str(tmp_path / "a"), SHORT, workers=2)
    rows = [json.loads(x) for x in (tmp_path / "a" / "swarm.jsonl").read_text().splitlines()]
    assert code == 0, rows
    assert [r["seed"] for r in rows] == [1, 2] and rows[0]["mix"] != rows[1]["mix"]
    assert swarm.run_swarm(NODE_LOSS, "2", str(tmp_path / "b"), SHORT, workers=1) == 0
    first, again = (
        json.loads((tmp_path / d / "seed-2" / "summary.json").read_text())["trace"]
        for d in ("a", "b")
    )
    assert first == again, "seed 2: the swarm run did not replay"


LIVENESS = """
name = "liveness"
duration_s = 10

[cluster]
nodes = 4
down_after_ms = 2000
rebuild_delay_s = 1

[[containers]]
name = "data"
rf = 2

[[workloads]]
kind = "vdisk-writer"
rate = 10
block_bytes = 65536
vdisk_bytes = 4194304

[[faults.at]]
at_s = 2
kind = "node-kill"
target = { nodes = ["n3", "n4"] }
"""


@pytest.mark.parametrize("for_good", [False, True])
def test_liveness_passes_when_the_cluster_recovers_and_fails_when_it_cannot(
    tmp_path: Path, for_good: bool
) -> None:
    """``--liveness S``: killed nodes that come back leave the cluster whole again within
    S; with three of four nodes gone for good (two of its three voters), it cannot be,
    and the check says so."""
    text = LIVENESS if not for_good else LIVENESS.replace('"n3", "n4"', '"n2", "n3", "n4"')
    text += "" if for_good else "duration_s = 3\n"
    path = tmp_path / "live.toml"
    path.write_text(text)
    result = runner.run(str(path), 3, str(tmp_path / "out"), liveness_s=20)
    checks = json.loads(Path(result.out, "summary.json").read_text())["checks"]
    live = next(c for c in checks if c["name"] == "liveness")
    if for_good:
        assert live["status"] == "fail" and "not recovered 20 s" in live["detail"], live
        assert result.code == 1
    else:
        assert live["status"] == "pass", f"seed 3: {live}"
        assert result.code == 0, f"seed 3: {checks}"


def test_the_command_line_writes_the_report_and_prints_trace_and_speed(tmp_path: Path) -> None:
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "shell.cli", "sim", NODE_LOSS, "--seed", "7"]
    cmd += ["--time-scale", "0.03", "-o", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"seed 7: {proc.stdout}\n{proc.stderr[-2000:]}"
    assert "[fabric sim] load" in proc.stderr, "progress goes to stderr"
    lines = proc.stdout.splitlines()
    trace = next(line.split()[1] for line in lines if line.startswith("trace "))
    assert len(trace) == 32, "an xxh3-128 in hex"
    assert any(line.startswith("simulated ") and "x real time" in line for line in lines)
    for name in FILES:
        assert (out / name).stat().st_size > 0, f"seed 7: {name} missing or empty"
    assert json.loads((out / "summary.json").read_text())["trace"] == trace
    bad = subprocess.run(
        [sys.executable, "-m", "shell.cli", "sim", str(tmp_path / "none.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "none.toml" in bad.stderr


SHIPPED = sorted((ROOT / "configs" / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_scenario_starts(path: Path, tmp_path: Path) -> None:
    runner.check(str(path), None, str(tmp_path))
