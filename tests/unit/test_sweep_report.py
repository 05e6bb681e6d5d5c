"""The sweep's comparison table and plots, from point summaries made by hand."""

from __future__ import annotations

import math
from pathlib import Path

from fabric.sweep import parse_sweep, points
from fabric.sweepstats import summarize
from shell.sim.sweep_report import PointResult, csv_text, markdown_table, plot

NAN = math.nan


def _results() -> list[PointResult]:
    out = []
    for p in points(parse_sweep("rf=2,3 racks=0,3")):
        lost = [1.0, 0.0, 0.0] if p["rf"] == 2 else [0.0, 0.0, 0.0]
        inside = [NAN] * 3 if p["racks"] == 0 else [0.5, 0.7, 0.6]
        summaries = {
            "data_lost": summarize(lost, "proportion"),
            "inside": summarize(inside, "mean"),
        }
        out.append(PointResult(p, 3, 0, summaries))
    return out


def test_the_table_has_a_row_per_point_and_says_what_was_not_measured() -> None:
    rows = csv_text(_results()).splitlines()
    assert rows[0] == (
        "rf,racks,runs,failed,data_lost,data_lost_low,data_lost_high,data_lost_n,"
        "inside,inside_low,inside_high,inside_n"
    )
    assert rows[1].startswith("2,0,3,0,0.3333333333333333,") and rows[1].endswith(",,,,0")
    md = markdown_table(_results()).splitlines()
    assert md[0] == "| rf | racks | runs | failed | data_lost | inside |"
    assert md[2] == "| 2 | 0 | 3 | 0 | 0.3333 [0.06149, 0.7923] | - |"
    assert md[3].endswith("| 0.6 [0.3516, 0.8484] |")


def test_a_plot_per_metric_with_the_last_key_as_series(tmp_path: Path) -> None:
    written = plot(str(tmp_path), _results())
    assert sorted(Path(p).name for p in written) == ["data_lost.png", "inside.png"]
    again = tmp_path / "again"
    plot(str(again), _results())
    # No stamp in the file: the same sweep gives the same plot bytes.
    assert (again / "plots" / "inside.png").read_bytes() == Path(written[1]).read_bytes()
