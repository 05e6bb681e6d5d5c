"""The reliability model: its placement, its agreement with the closed form, and the
checks that it sees what it is for (slow repairs and bad placement lose data)."""

from __future__ import annotations

import collections
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from fabric.failures import YEAR_S, FailureSpec
from fabric.placement.rendezvous import Candidate, place
from fabric.reliability.closed import closed_form
from fabric.reliability.layout import Layout, cluster, rendezvous_layout
from fabric.reliability.model import run_trial, simulate
from fabric.reliability.stats import mean_ci, poisson_rate_ci, proportion_ci

DAY_S = 86400.0
FREQUENT = FailureSpec(
    node_afr=0.3,
    disk_afr=0.15,
    disks_per_node=2,
    replacement_s=4 * DAY_S,
    disk_replacement_s=DAY_S,
    repair_delay_s=3600,
    repair_time_s=5 * DAY_S,
    node_bytes=1e12,
)
"""Failures so frequent and rebuilds so slow that losses are common enough to count."""


def test_small_layouts_are_placed_by_the_fabrics_own_place() -> None:
    ids, racks = cluster(12, 4)
    layout = rendezvous_layout(ids, racks, 50, 3, 2)
    cands = [Candidate(n, racks[n]) for n in ids]
    for g, members in enumerate(layout.members):
        assert [ids[m] for m in members] == place(f"g{g}", cands, 3)


@pytest.mark.parametrize(("nodes", "racks", "width"), [(60, 6, 3), (40, 0, 6), (61, 7, 4)])
def test_the_vectorised_placement_keeps_the_rules_of_place(
    nodes: int, racks: int, width: int
) -> None:
    ids, rack_of = cluster(nodes, racks)
    fast = rendezvous_layout(ids, rack_of, 3000, width, 1, exact=False)
    exact = rendezvous_layout(ids, rack_of, 3000, width, 1, exact=True)
    for layout in (fast, exact):
        for members in layout.members:
            domains = [rack_of[ids[m]] or ids[m] for m in members]
            assert len(set(domains)) == width, f"{members} share a fault domain"
    # Both spread members evenly: every node's load within the same bounds.
    for layout in (fast, exact):
        load = collections.Counter(m for ms in layout.members for m in ms)
        mean = 3000 * width / nodes
        assert min(load.values()) > 0.6 * mean and max(load.values()) < 1.4 * mean
    # Different keys, independent draws: the fast layout is not the exact one.
    assert fast.members != exact.members


@pytest.mark.parametrize(
    ("width", "tolerance", "data", "groups", "seed"),
    [(2, 1, 1, 150, 1), (3, 1, 2, 100, 4), (3, 2, 1, 300, 3)],
    ids=["RF2", "EC 2+1", "RF3"],
)
def test_the_monte_carlo_agrees_with_the_closed_form_where_losses_are_frequent(
    width: int, tolerance: int, data: int, groups: int, seed: int
) -> None:
    """99% intervals over 100 trials of 10 years. What the closed form gets exactly (by
    linearity: groups lost, bytes at risk; and loss incidents when one more failure
    loses data) must fall inside; where it is an upper estimate of the loss frequency
    (incidents that cluster, overlapping critical sets for t >= 2) it must not fall
    below the interval."""
    spec = FREQUENT
    if tolerance == 2:  # two more concurrent failures: likelier ones, slower rebuilds
        spec = replace(FREQUENT, node_afr=0.63, disk_afr=0.0, disks_per_node=1)
        spec = replace(spec, repair_time_s=10 * DAY_S)
    ids, racks = cluster(15, 5)
    layout = rendezvous_layout(ids, racks, groups, width, tolerance, data)
    s = simulate(layout, spec, years=10, trials=100, seed=seed, confidence=0.99)
    c = s.closed
    what = f"seed {seed}, width {width} tolerance {tolerance}"
    assert s.groups_lost_per_year.value > 0.5, f"{what}: too few losses to count"
    assert s.groups_lost_per_year.contains(c.groups_lost_per_year), (
        f"{what}: groups lost a year {s.groups_lost_per_year} vs {c.groups_lost_per_year}"
    )
    assert s.bytes_at_risk.contains(c.bytes_at_risk), (
        f"{what}: bytes at risk {s.bytes_at_risk} vs {c.bytes_at_risk}"
    )
    if tolerance == 1:
        assert s.mttdl_years.contains(c.mttdl_years), (
            f"{what}: MTTDL {s.mttdl_years} vs closed form {c.mttdl_years}"
        )
    else:
        assert c.mttdl_years <= s.mttdl_years.high, f"{what}: {s.mttdl_years} vs {c.mttdl_years}"
    assert c.p_loss_per_year >= s.p_loss_per_year.low, (
        f"{what}: P(loss)/yr {s.p_loss_per_year} vs closed form {c.p_loss_per_year}"
    )


def test_without_repairs_the_model_loses_far_more() -> None:
    """Checker: a model whose rebuilds never end must show it."""
    ids, racks = cluster(15, 5)
    layout = rendezvous_layout(ids, racks, 150, 2, 1)
    spec = FailureSpec(node_afr=0.1, repair_delay_s=600, repair_time_s=DAY_S)
    healed = simulate(layout, spec, years=5, trials=20, seed=4)
    broken = simulate(layout, spec, years=5, trials=20, seed=4, repairs=False)
    assert broken.groups_lost_per_year.low > 10 * max(healed.groups_lost_per_year.high, 0.01), (
        f"seed 4: no repairs {broken.groups_lost_per_year}, repairs {healed.groups_lost_per_year}"
    )


def test_a_placement_with_two_copies_in_one_rack_loses_data_to_a_rack_event() -> None:
    """Checker: the model sees correlated failures through the placement. The fabric's
    placement never shares a rack; a broken one that does loses data when it fails."""
    ids, racks = cluster(12, 4)
    good = rendezvous_layout(ids, racks, 120, 2, 1)
    by_rack: dict[str, list[int]] = collections.defaultdict(list)
    for i, n in enumerate(ids):
        by_rack[racks[n]].append(i)
    shared = [(ms[g % 3], ms[(g + 1) % 3]) for g in range(120) for ms in [by_rack[f"r{g % 4 + 1}"]]]
    bad = Layout(good.nodes, good.racks, [tuple(m) for m in shared], 1)
    spec = FailureSpec(rack_events_per_year=1.0, rack_loss_fraction=1.0, repair_time_s=3600)
    for seed in range(1, 4):
        lost_good = run_trial(good, spec, 2, seed).groups_lost
        lost_bad = run_trial(bad, spec, 2, seed).groups_lost
        assert lost_good == 0, f"seed {seed}: rack-aware placement lost {lost_good} groups"
        assert lost_bad > 0, f"seed {seed}: copies sharing a rack survived its loss"


def test_the_closed_form_is_gibsons_mttdl_when_failures_are_rare() -> None:
    """RAID-5-like group: MTTDL = MTTF**2 / (n (n-1) MTTR) for MTTR << MTTF."""
    spec = FailureSpec(node_afr=0.01, repair_time_s=DAY_S, repair_delay_s=0, replacement_s=0)
    c = closed_form(spec, nodes=10, groups=1, width=5, tolerance=1)
    mttf = 1 / -math.log1p(-0.01)  # years
    gibson = mttf**2 / (5 * 4 * (DAY_S / YEAR_S))
    assert c.mttdl_years == pytest.approx(gibson, rel=0.01)


def test_intervals_cover_what_they_should() -> None:
    assert proportion_ci(0, 100).low == 0 and 0.02 < proportion_ci(0, 100).high < 0.05
    assert proportion_ci(50, 100).contains(0.5)
    rate = poisson_rate_ci(100, 10)
    assert rate.value == 10 and 8 < rate.low < 10 < rate.high < 12.5
    assert poisson_rate_ci(0, 10).high == pytest.approx(-math.log(0.05) / 10)
    assert mean_ci([1.0, 2.0, 3.0]).contains(2.0)


def test_the_cli_side_writes_a_summary_and_a_report(tmp_path: Path) -> None:
    from shell.sim.reliability import run

    scenario = Path(__file__).parents[2] / "configs" / "reliability" / "high-afr.toml"
    lines: list[str] = []
    assert run(str(scenario), 3, str(tmp_path), years=2, trials=3, echo=lines.append) == 0
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert [c["policy"] for c in doc["containers"]] == ["RF2", "EC 2+1"]
    assert "closed_form" in doc["containers"][0]
    assert "| rf2 | RF2 |" in (tmp_path / "report.md").read_text()
    assert any(line.startswith("rf2 ") for line in lines)


def test_the_cli_side_refuses_a_scenario_without_failures(tmp_path: Path) -> None:
    from shell.sim.reliability import run

    scenario = Path(__file__).parents[2] / "configs" / "scenarios" / "node-loss.toml"
    lines: list[str] = []
    assert run(str(scenario), 1, str(tmp_path), echo=lines.append) == 2
    assert "no [failures] table" in lines[0]


def test_copyset_replication_makes_few_copysets_and_loses_data_as_the_paper_says() -> None:
    from fabric.reliability.copysets import (
        copyset_replication,
        loss_probability,
        random_window,
        simulate_outages,
    )

    n, r, failed = 300, 3, 30
    few = copyset_replication(n, r, 4, seed=1)
    assert len(few) == 2 * (n // r)  # S / (R - 1) permutations of N / R copysets
    assert all(len(set(row)) == r for row in few.tolist())
    many = random_window(n, r, 10)
    assert len(many) == n * math.comb(10, 2)
    for sets, seed in ((few, 1), (many, 2)):
        formula = loss_probability(len(sets), n, r, failed)
        mc = simulate_outages(sets, n, failed, 3000, seed)
        # The formula treats copysets as independent: close for few, high for many.
        assert mc.low <= formula <= mc.high * 1.15, f"seed {seed}: {mc} vs {formula}"
    assert loss_probability(len(few), n, r, failed) < loss_probability(len(many), n, r, failed)


def test_the_outage_monte_carlo_fires_when_a_copyset_is_inside_the_failed_set() -> None:
    """Checker: an outage of exactly one copyset's nodes must count as a loss."""
    import numpy as np

    from fabric.reliability.copysets import simulate_outages

    sets = np.array([[0, 1, 2]], dtype=np.int32)
    assert simulate_outages(sets, 3, 3, 10, seed=1).value == 1.0
    assert simulate_outages(sets, 4, 2, 10, seed=1).value == 0.0


def test_fabric_sim_runs_the_reliability_model_at_a_size_of_its_own(tmp_path: Path) -> None:
    """``fabric sim --model reliability --nodes N --racks R``: the scenario's policies on a
    cluster of another size, the report where -o says."""
    import subprocess
    import sys

    scenario = Path(__file__).parents[2] / "configs" / "reliability" / "high-afr.toml"
    args = [sys.executable, "-m", "shell.cli", "sim", str(scenario), "--model", "reliability"]
    args += ["--trials", "2", "--years", "1", "--nodes", "60", "--racks", "6"]
    done = subprocess.run(
        [*args, "-o", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert [c["nodes"] for c in doc["containers"]] == [60, 60]
