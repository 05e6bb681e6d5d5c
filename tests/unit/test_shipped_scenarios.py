"""Every scenario in configs/scenarios/ parses, says in its first line what it shows,
and is a full-length experiment (its short form runs in tests/scenarios)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.scenario import load_scenario, schedule

SCENARIOS = sorted((Path(__file__).parents[2] / "configs" / "scenarios").glob("*.toml"))


def test_the_issue_s_scenarios_are_shipped() -> None:
    names = {p.stem for p in SCENARIOS}
    assert names >= {
        "node-loss",
        "leader-partition",
        "rack-failure-ec",
        "bit-rot",
        "slow-disk",
        "rolling-restart",
        "flaky-import",
        "disk-full",
        "jepsen-mix",
    }


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_a_shipped_scenario_parses_and_explains_itself(path: Path) -> None:
    first, second = path.read_text().splitlines()[:2]
    assert first.startswith("# ") and len(first) > 40, f"{path.name}: no one-line comment"
    assert not second.startswith("#"), f"{path.name}: the explanation is one line"
    s = load_scenario(str(path))
    assert s.name == path.stem
    assert 60 <= s.duration_s <= 180, "a full-length experiment runs 1-3 minutes"
    assert schedule(s, s.seed) or any(w.drop_probability for w in s.workloads), "no fault"
