"""Timeline aggregation and the report, from a canned history (no cluster)."""

from __future__ import annotations

import json
from pathlib import Path

from fabric import timeline
from fabric.history import Op
from fabric.scenario import parse_scenario
from fabric.timeline import FaultBand, Sample
from shell.experiment import report
from shell.experiment.verdicts import CheckResult

SCENARIO = parse_scenario(
    """
duration_s = 6
[[containers]]
name = "c"
[[workloads]]
kind = "vdisk-writer"
name = "w"
[[workloads]]
kind = "kv-cas"
name = "kv"
[checks]
max_unavailability_s = 1.5
""",
    "canned.toml",
)


def op(p: int, kind: str, t0: float, t1: float, outcome: str = "ok", wl: str = "w") -> Op:
    extra = {"workload": wl, "bytes": 1_000_000} if kind in ("write", "read") else {"workload": wl}
    return Op(p, kind, "v/0" if wl == "w" else "k", "x", t0, t1, outcome, "", extra)


# Writer: fine until 2.0 s, nothing ok from 2.0 to 4.5 s (a timeout inside), then fine.
OPS = [
    op(1, "write", 0.0, 0.1),
    op(1, "write", 0.5, 0.6),
    op(1, "read", 1.0, 1.2),
    op(1, "write", 1.9, 2.0),
    op(1, "write", 2.1, 4.1, "unknown"),
    op(1, "write", 4.2, 4.5),
    op(1, "write", 5.0, 5.01),
    *(op(2, "kv-write", t / 10, t / 10 + 0.05, wl="kv") for t in range(0, 55, 5)),
]
SAMPLES = [
    Sample(t=0.0, nodes_up=3, nodes_total=3, resiliency=1, rebuilt_bytes=0),
    Sample(t=1.0, nodes_up=3, nodes_total=3, resiliency=1),
    Sample(
        t=2.0,
        nodes_up=2,
        nodes_total=3,
        resiliency=0,
        reduced=True,
        reduced_resiliency_bytes=5_000_000,
        copied_by_node={"n2": 0},
    ),
    Sample(t=3.0, ok=False),
    Sample(
        t=4.0,
        nodes_up=2,
        nodes_total=3,
        resiliency=0,
        reduced=True,
        reduced_resiliency_bytes=2_000_000,
        rebuilt_bytes=3_000_000,
        copied_by_node={"n2": 3_000_000},
    ),
    Sample(
        t=5.0,
        nodes_up=2,
        nodes_total=3,
        resiliency=1,
        rebuilt_bytes=5_000_000,
        copied_by_node={"n2": 5_000_000},
        usage={"logical_bytes": 7},
    ),
]
FAULTS = [FaultBand(2.0, 4.0, "node-kill", ("n1",), "process")]


def test_rows_per_second() -> None:
    rows = timeline.rows(OPS, SAMPLES, FAULTS, 6)
    assert [r.t for r in rows] == list(range(6))
    assert rows[0].ops == 4 and rows[0].ok == 4 and rows[0].mb_s == 2.0  # 2 writes of 1 MB
    assert rows[4].errors == 1  # the unknown write completed at 4.1 s
    assert rows[2].faults_active == 1 and rows[4].faults_active == 0
    assert rows[3].resiliency is None, "a sample without an answer leaves a gap"
    assert rows[4].rebuild_bytes == 3_000_000 and rows[5].rebuild_bytes == 2_000_000
    assert rows[2].nodes_up == 2 and rows[2].reduced_resiliency_bytes == 5_000_000
    assert rows[0].lat_p50_ms == 50.0 and rows[0].lat_p99_ms == 100.0


def test_percentile_is_nearest_rank() -> None:
    assert timeline.percentile([], 50) is None
    assert timeline.percentile([3, 1, 2], 50) == 2
    assert timeline.percentile(list(range(1, 101)), 99) == 99


def test_unavailability_reduced_time_rebuild() -> None:
    windows = timeline.unavailability(OPS, 6)
    assert windows == {"kv": [], "w": [(2.0, 4.5)]}
    assert timeline.reduced_seconds(SAMPLES, 6) == 3.0  # 2.0 -> 3.0 (gap skipped), 4.0 -> 5.0
    assert timeline.rebuild_window(SAMPLES) == (2.0, 5.0)
    traffic = timeline.repair_traffic(SAMPLES, {"n2": "r2"})
    assert traffic["rebuilt_bytes"] == 5_000_000
    assert traffic["by_rack"] == {"r2": 5_000_000}
    assert traffic["by_link"] == {} and traffic["across_racks_bytes"] == 0
    assert timeline.repair_traffic(SAMPLES, {})["across_racks_bytes"] is None  # no racks


def test_repair_traffic_is_split_by_whether_it_crossed_a_rack() -> None:
    racks = {"n1": "r1", "n2": "r1", "n3": "r2"}
    before = timeline.Sample(0.0, pulled_by_link={"n1>n2": 100})
    after = timeline.Sample(1.0, pulled_by_link={"n1>n2": 400, "n3>n2": 50, "n1>n3": 7})
    traffic = timeline.repair_traffic([before, after], racks)
    assert traffic["by_link"] == {"n1>n2": 300, "n1>n3": 7, "n3>n2": 50}
    assert (traffic["inside_racks_bytes"], traffic["across_racks_bytes"]) == (300, 57)


def test_report_names_the_culprit_and_writes_every_file(tmp_path: Path) -> None:
    lost = OPS[3]
    checks = [
        CheckResult("blocks", "fail", "write v/0 lost", lost, {"lost_writes": 1, "wrong_reads": 0}),
        CheckResult("kv-linearizable", "skipped", "checker not available in this build"),
    ]
    summary = report.summarize(SCENARIO, 7, OPS, SAMPLES, FAULTS, checks, {"n2": "r2"}, 9.0)
    assert summary["passed"] is False
    assert summary["acknowledged_writes_lost"] == 1 and summary["wrong_reads"] == 0
    assert summary["kv_linearizable"] == "skipped"
    by_name = {c["name"]: c for c in summary["checks"]}
    assert by_name["max-unavailability"]["status"] == "fail"
    assert by_name["max-unavailability"]["culprit"]["outcome"] == "unknown"
    assert summary["unavailability"]["longest_s"] == 2.5
    assert summary["rebuild"]["time_s"] == 3.0
    assert summary["degraded_reads"]["healthy_reads"] == 1
    rows = timeline.rows(OPS, SAMPLES, FAULTS, 6)
    report.write(str(tmp_path), summary, OPS, [{"seq": 1}], rows, FAULTS, {"blocks": lost})
    for name in report.FILES:
        assert (tmp_path / name).stat().st_size > 0, name
    for png in report.PLOTS:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report.md").read_text()
    assert "FAILED" in md and "**blocks** broke at: process 1 write v/0" in md
    assert "| kv-linearizable | skipped |" in md
    assert json.loads((tmp_path / "summary.json").read_text())["seed"] == 7
    csv_lines = (tmp_path / "timeline.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(timeline.COLUMNS) and len(csv_lines) == 7
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == len(OPS)
