"""A sweep's comparison table (``sweep.csv``, ``sweep.md``) and one plot per metric.

One row per point, in the order the points were run; per metric its value over the
seeds and the confidence interval (``fabric.sweepstats``). Numbers are written the same
way every time (no wall clock, no run order), so one sweep gives the same bytes on
local processes and on Dask.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from fabric.sweep import Point, format_value, label
from fabric.sweepstats import CONFIDENCE, Summary


@dataclass(frozen=True, slots=True)
class PointResult:
    point: Point
    runs: int
    failed: int
    summaries: dict[str, Summary]


def metric_names(results: Sequence[PointResult]) -> list[str]:
    """Every metric any point measured, in the order they first appear."""
    names: dict[str, None] = {}
    for r in results:
        names.update(dict.fromkeys(r.summaries))
    return list(names)


def _num(x: float) -> str:
    return "" if math.isnan(x) else repr(x)


def csv_text(results: Sequence[PointResult]) -> str:
    keys = list(results[0].point) if results else []
    metrics = metric_names(results)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        [*keys, "runs", "failed"]
        + [f"{m}{suffix}" for m in metrics for suffix in ("", "_low", "_high", "_n")]
    )
    nan = Summary("mean", 0, math.nan, math.nan, math.nan)
    for r in results:
        cells = [format_value(r.point[k]) for k in keys] + [str(r.runs), str(r.failed)]
        for m in metrics:
            s = r.summaries.get(m, nan)
            cells += [_num(s.value), _num(s.low), _num(s.high), str(s.n)]
        w.writerow(cells)
    return out.getvalue()


def _cell(s: Summary | None) -> str:
    if s is None or math.isnan(s.value):
        return "-"
    if math.isnan(s.low):
        return f"{s.value:.4g}"
    return f"{s.value:.4g} [{s.low:.4g}, {s.high:.4g}]"


def markdown_table(results: Sequence[PointResult]) -> str:
    keys = list(results[0].point) if results else []
    metrics = metric_names(results)
    head = [*keys, "runs", "failed", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [format_value(r.point[k]) for k in keys] + [str(r.runs), str(r.failed)]
        cells += [_cell(r.summaries.get(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(scenario: str, model: str, seeds: str, results: Sequence[PointResult]) -> str:
    pct = f"{CONFIDENCE:.0%}"
    return (
        f"# Sweep of {scenario} ({model} model)\n\n"
        f"{len(results)} points, seeds {seeds}. Each cell: the value over the seeds and its "
        f"{pct} confidence interval: a mean with a Student t interval, the share of runs "
        "with an event (proportions: data_lost) with a Wilson interval, or a total. "
        "`-`: no run measured it.\n\n" + markdown_table(results)
    )


def _series(results: Sequence[PointResult]) -> tuple[list[str], list[tuple[str, list[int]]]]:
    """The x labels and the series: with two keys or more, the last key's values are the
    series (one colour each) and the other keys label the x axis; else one series."""
    keys = list(results[0].point) if results else []
    if len(keys) < 2:
        return [label(r.point) for r in results], [("", list(range(len(results))))]
    last = keys[-1]
    xlabels: dict[str, None] = {}
    series: dict[str, list[int]] = {}
    # A full cartesian product, the last key fastest: each series has one point per x
    # label, in x order.
    for i, r in enumerate(results):
        xlabels.setdefault(label({k: v for k, v in r.point.items() if k != last}))
        series.setdefault(f"{last}={format_value(r.point[last])}", []).append(i)
    return list(xlabels), list(series.items())


def plot(out_dir: str, results: Sequence[PointResult]) -> list[str]:
    """One PNG per metric: its value at each point, error bars = the interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = os.path.join(out_dir, "plots")
    os.makedirs(folder, exist_ok=True)
    xlabels, series = _series(results)
    written = []
    for m in metric_names(results):
        rows = [r.summaries.get(m) for r in results]
        if all(s is None or math.isnan(s.value) for s in rows):
            continue
        fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(xlabels) * len(series) + 2), 4))
        for j, (name, members) in enumerate(series):
            shift = (j - (len(series) - 1) / 2) * 0.12
            have = [(x, rows[i]) for x, i in enumerate(members) if _measured(rows[i])]
            ax.errorbar(
                [x + shift for x, _ in have],
                [s.value for _, s in have],  # type: ignore[union-attr]
                yerr=[[_gap(s, True) for _, s in have], [_gap(s, False) for _, s in have]],
                fmt="o",
                capsize=4,
                label=name or None,
            )
        ax.set_xticks(range(len(xlabels)), xlabels, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(xlabels) - 0.5)
        if len(series) > 1:
            ax.legend(fontsize=8)
        kind = next(s.kind for s in rows if s is not None)
        ax.set_title(f"{m} ({kind}, {CONFIDENCE:.0%} interval over seeds)", fontsize=10)
        ax.grid(alpha=0.3)
        # Fixed margins (room for slanted labels): tight_layout would draw the figure twice.
        fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.25)
        path = os.path.join(folder, re.sub(r"[^A-Za-z0-9_.-]", "_", m) + ".png")
        # No software/date stamp: the same sweep writes the same bytes.
        fig.savefig(path, dpi=90, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


def _measured(s: Summary | None) -> bool:
    return s is not None and not math.isnan(s.value)


def _gap(s: Summary | None, lower: bool) -> float:
    if s is None or math.isnan(s.low):
        return 0.0
    return max(0.0, s.value - s.low) if lower else max(0.0, s.high - s.value)


def write(
    out_dir: str, scenario: str, model: str, seeds: str, results: Sequence[PointResult]
) -> None:
    with open(os.path.join(out_dir, "sweep.csv"), "w", encoding="utf-8", newline="") as f:
        f.write(csv_text(results))
    with open(os.path.join(out_dir, "sweep.md"), "w", encoding="utf-8") as f:
        f.write(markdown(scenario, model, seeds, results))
    plot(out_dir, results)
