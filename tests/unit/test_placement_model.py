"""The ``placement`` sweep model: one run per seed, checked against the closed form."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fabric.sweepstats import summarize
from shell.sim.points import UnknownModel, evaluate, find_model

SHIPPED = str(Path(__file__).parents[2] / "configs" / "sweeps" / "two-nodes-lost.toml")


def test_a_run_is_a_pure_function_of_scenario_point_and_seed() -> None:
    one = evaluate(SHIPPED, {"policy": "rf2"}, 7, "placement")
    assert one == evaluate(SHIPPED, {"policy": "rf2"}, 7, "placement")
    assert one != evaluate(SHIPPED, {"policy": "rf2"}, 8, "placement")
    assert one["storage_overhead"] == 2 and one["failed_nodes"] == 2
    assert math.isnan(one["repair_across_racks_per_byte"]), "no racks: not measured"


def test_rf2_loss_agrees_with_the_closed_form_within_its_interval() -> None:
    """Two of fifteen nodes fail: an RF2 group placed uniformly on distinct nodes is lost
    when both its copies are on them, with probability 1 / C(15, 2) = 1/105."""
    runs = [evaluate(SHIPPED, {"policy": "rf2"}, seed, "placement") for seed in range(1, 41)]
    s = summarize([r["lost_fraction"] for r in runs], "mean")
    assert s.low <= 1 / math.comb(15, 2) <= s.high
    # RF3 and a 4+2 code survive any two failures: nothing is lost in any run.
    for policy in ("rf3", "4+2"):
        r = evaluate(SHIPPED, {"policy": policy}, 1, "placement")
        assert (r["data_lost"], r["lost_fraction"]) == (0, 0)


def test_a_scenario_without_a_permanent_kill_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    text = Path(SHIPPED).read_text().replace('target = { nodes = ["n4", "n11"] }', "")
    path.write_text(text.replace("at_s = 60", "at_s = 60\nduration_s = 5"))
    with pytest.raises(ValueError, match="needs a node killed for good"):
        evaluate(str(path), {}, 1, "placement")


def test_models_are_found_by_name_or_by_function() -> None:
    assert find_model("placement").kinds["data_lost"] == "proportion"
    assert find_model("tests.sim.sweep_models:flaky").target.endswith(":flaky")
    with pytest.raises(UnknownModel, match="unknown model 'nope' \\(full, placement, reliability"):
        find_model("nope")
