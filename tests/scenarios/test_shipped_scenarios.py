"""Every scenario shipped in configs/scenarios/ runs in CI in a short form and its checks
pass: ``fabric run FILE --time-scale F`` as a user would run it (a subprocess, real
node processes on loopback), then one fact that shows the scenario did what its first
line says, read from its summary.json.

A new file in configs/scenarios/ is picked up; without a fact of its own it is held to
the common ones (exit 0, every report file).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shell.experiment.report import FILES

SCENARIOS = sorted((Path(__file__).parents[2] / "configs" / "scenarios").glob("*.toml"))
TIME_SCALE = 0.3
"""The short form: a 90 s experiment in 27 s of load (the cluster's own timeouts, and
so how fast it reacts, are those of the full run)."""
WALL_LIMIT_S = 90
"""Each short run, cluster start and stop included (they measured 21-42 s on 2 cores
alone, up to 53 s beside another test file: the suite runs one per core)."""
KNOWN_FAILURES: dict[str, str] = {}
"""Scenario -> why its checks fail honestly (a fabric bug, reported): xfail(strict)."""

Summary = dict[str, Any]


def _faults(s: Summary, kind: str) -> list[dict[str, Any]]:
    found = [f for f in s["faults"] if f["kind"] == kind and f["via"] in ("api", "process")]
    assert found, f"no {kind} applied: {s['faults']}"
    return found


def _down(s: Summary) -> set[str]:
    return {n for n, seen in s["observed"]["node_states"].items() if "DOWN" in seen}


def node_loss(s: Summary) -> None:
    (kill,) = _faults(s, "node-kill")
    assert set(kill["nodes"]) <= _down(s), "the killed node was never seen DOWN"
    events = s["observed"]["events_by_kind"]
    assert events.get("rebuild_finished", 0) >= 1, f"no rebuild finished: {events}"
    assert s["rebuild"]["rebuilt_bytes"] > 0 and s["reduced_resiliency_s"] > 0
    assert s["acknowledged_writes_lost"] == 0


def leader_partition(s: Summary) -> None:
    (cut,) = _faults(s, "net-partition")
    leaders = s["observed"]["leaders"]
    assert leaders[0] in cut["nodes"] and len(leaders) >= 2, f"leaders seen: {leaders}"
    assert s["kv_linearizable"] == "pass"


def rack_failure_ec(s: Summary) -> None:
    (kill,) = _faults(s, "node-kill")
    assert len(kill["nodes"]) == 2 and set(kill["nodes"]) <= _down(s)
    reads_during = s["degraded_reads"]["degraded_reads"]
    assert reads_during > 0, "no read was served with the rack gone"
    # The writer overwrites its vdisk, so coded strips may be dead by the end: the peak.
    assert s["observed"]["ec_savings_peak_bytes"] > 0, "nothing was erasure coded"
    assert s["wrong_reads"] == 0


def bit_rot(s: Summary) -> None:
    repairs = s["observed"]["repairs"]
    assert repairs["read"] + repairs["scrub"] >= 1, f"no flip found and mended: {repairs}"
    assert s["wrong_reads"] == 0


def slow_disk(s: Summary) -> None:
    phases = s["observed"]["latency_by_phase"]
    before, during = phases["before"]["p99_ms"], phases["during"]["p99_ms"]
    assert during > before, f"p99 {before} ms before the slow disk, {during} ms with it"


def rolling_restart(s: Summary) -> None:
    restarted = {n for f in _faults(s, "node-restart") for n in f["nodes"]}
    assert restarted == {"n1", "n2", "n3", "n4", "n5"}
    assert s["acknowledged_writes_lost"] == 0 and s["kv_linearizable"] == "pass"


def flaky_import(s: Summary) -> None:
    source = s["observed"]["import_source"]
    assert source["broken"] > 0 and source["resumed"] > 0, source
    (images,) = [c for c in s["checks"] if c["name"] == "images"]
    assert images["status"] == "pass" and s["ops"]["by_kind"]["import"]["ok"] > 0


def disk_full(s: Summary) -> None:
    assert s["observed"]["events_by_kind"].get("disk_state", 0) >= 1, "no disk turned FULL"
    assert s["acknowledged_writes_lost"] == 0


def jepsen_mix(s: Summary) -> None:
    applied = [f for f in s["faults"] if f["via"] == "api"]
    assert len(applied) >= 3 and len({f["kind"] for f in applied}) >= 2, applied
    assert s["kv_linearizable"] == "pass" and s["acknowledged_writes_lost"] == 0


FACTS: dict[str, Callable[[Summary], None]] = {
    "node-loss": node_loss,
    "leader-partition": leader_partition,
    "rack-failure-ec": rack_failure_ec,
    "bit-rot": bit_rot,
    "slow-disk": slow_disk,
    "rolling-restart": rolling_restart,
    "flaky-import": flaky_import,
    "disk-full": disk_full,
    "jepsen-mix": jepsen_mix,
}


def _params() -> list[Any]:
    out = []
    for path in SCENARIOS:
        marks = []
        if path.stem in KNOWN_FAILURES:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[path.stem]))
        out.append(pytest.param(path, id=path.stem, marks=marks))
    return out


@pytest.mark.parametrize("path", _params())
def test_a_shipped_scenario_passes_in_its_short_form(path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "shell.cli",
                "run",
                str(path),
                "--time-scale",
                str(TIME_SCALE),
                "-o",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=WALL_LIMIT_S + 60,
            check=False,
        )
    finally:
        if (out / "cluster" / "cluster.toml").exists():
            subprocess.run(
                [sys.executable, "-m", "shell.cli", "down", "--dir", str(out / "cluster")],
                capture_output=True,
                timeout=30,
                check=False,
            )
    elapsed = time.monotonic() - started
    tail = run.stdout[-3000:] + "\n" + run.stderr[-3000:]
    assert run.returncode == 0, f"{path.name} (seed 1): {tail}"
    for name in FILES:
        assert (out / name).is_file(), f"{name} missing"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is True
    fact = FACTS.get(path.stem)
    if fact is not None:
        fact(summary)
    assert elapsed < WALL_LIMIT_S, f"{path.name}: the short form took {elapsed:.0f} s"
