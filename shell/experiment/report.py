"""An experiment's output folder: ``history.jsonl``, ``events.jsonl``, ``timeline.csv``,
``summary.json``, ``report.md`` and the plots (``throughput.png``, ``resiliency.png``).

``summarize`` turns the run's records into the summary (plain data, tested from a
canned history); ``write`` puts every file in the folder. The plots use matplotlib's
Agg backend: no display is needed.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from fabric import history, timeline
from fabric.history import Op
from fabric.scenario import Scenario
from fabric.timeline import FaultBand, Row, Sample
from shell.experiment.verdicts import CheckResult

PLOTS = ("throughput.png", "resiliency.png")
PNG_METADATA: dict[str, str | None] = {"Software": None}
"""No matplotlib version in the plots: the same run gives the same bytes (``fabric sim``)."""
FILES = ("history.jsonl", "events.jsonl", "timeline.csv", "summary.json", "report.md", *PLOTS)


def threshold_checks(
    scenario: Scenario,
    ops: Sequence[Op],
    windows: dict[str, list[tuple[float, float]]],
    reduced_s: float,
) -> list[CheckResult]:
    """The scenario's thresholds (``[checks]``), judged like the checkers are."""
    out = []
    c = scenario.checks
    if c.max_unavailability_s is not None:
        longest = max(
            ((b - a, name, a, b) for name, ws in windows.items() for a, b in ws),
            default=(0.0, "", 0.0, 0.0),
        )
        if longest[0] > c.max_unavailability_s:
            _, name, a, b = longest
            culprit = next(
                (
                    op
                    for op in ops
                    if op.outcome != "ok"
                    and op.extra.get("workload", op.kind) == name
                    and a <= op.complete <= b
                ),
                None,
            )
            detail = (
                f"{name} completed nothing for {b - a:.1f} s ({a:.1f}-{b:.1f} s), "
                f"more than {c.max_unavailability_s:g} s"
            )
            out.append(CheckResult("max-unavailability", "fail", detail, culprit))
        else:
            detail = f"longest window {longest[0]:.1f} s <= {c.max_unavailability_s:g} s"
            out.append(CheckResult("max-unavailability", "pass", detail))
    if c.max_reduced_resiliency_s is not None:
        ok = reduced_s <= c.max_reduced_resiliency_s
        detail = f"{reduced_s:.1f} s at reduced resiliency (at most {c.max_reduced_resiliency_s:g})"
        out.append(CheckResult("max-reduced-resiliency", "pass" if ok else "fail", detail))
    if c.max_error_fraction is not None and ops:
        bad = [op for op in ops if op.outcome != "ok"]
        share = len(bad) / len(ops)
        ok = share <= c.max_error_fraction
        detail = f"{share:.1%} of operations did not succeed (at most {c.max_error_fraction:.1%})"
        out.append(
            CheckResult(
                "max-error-fraction", "pass" if ok else "fail", detail, bad[0] if bad else None
            )
        )
    return out


def summarize(
    scenario: Scenario,
    seed: int,
    ops: Sequence[Op],
    samples: Sequence[Sample],
    faults: Sequence[FaultBand],
    checks: Sequence[CheckResult],
    racks: dict[str, str],
    elapsed_s: float,
) -> dict[str, Any]:
    duration = scenario.duration_s
    windows = timeline.unavailability(ops, duration)
    reduced_s = timeline.reduced_seconds(samples, duration)
    checks = [*checks, *threshold_checks(scenario, ops, windows, reduced_s)]
    rebuild = timeline.rebuild_window(samples)
    blocks = next((c for c in checks if c.name == "blocks"), None)
    kv = next((c for c in checks if c.name == "kv-linearizable"), None)
    last = next((s for s in reversed(samples) if s.ok), None)
    failed = [c for c in checks if c.status == "fail"]
    return {
        "scenario": scenario.name,
        "seed": seed,
        "duration_s": duration,
        "elapsed_s": round(elapsed_s, 1),
        "passed": not failed,
        "ops": timeline.op_counts(ops),
        "acknowledged_writes_lost": _stat(blocks, "lost_writes"),
        "wrong_reads": _stat(blocks, "wrong_reads"),
        "kv_linearizable": None if kv is None else kv.status,
        "checks": [_check_json(c) for c in checks],
        "unavailability": {
            "windows": {k: [list(w) for w in v] for k, v in windows.items() if v},
            "total_s": round(sum(b - a for ws in windows.values() for a, b in ws), 2),
            "longest_s": round(
                max((b - a for ws in windows.values() for a, b in ws), default=0), 2
            ),
        },
        "reduced_resiliency_s": reduced_s,
        "rebuild": {
            "started_s": None if rebuild is None else rebuild[0],
            "ended_s": None if rebuild is None else rebuild[1],
            "time_s": None
            if rebuild is None or rebuild[1] is None
            else round(rebuild[1] - rebuild[0], 2),
            **timeline.repair_traffic(samples, racks),
        },
        "degraded_reads": {
            **timeline.degraded_latency(ops, samples, faults, duration),
            "count_from_metrics": last.degraded_reads if last else None,
        },
        "savings": dict(last.usage) if last else {},
        "faults": [asdict(f) for f in faults],
    }


def observed(
    ops: Sequence[Op],
    raw_samples: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    faults: Sequence[FaultBand],
) -> dict[str, Any]:
    """What the run showed beyond the checks: the leaders in the order they were seen,
    the states each node was seen in, the cluster's events by kind, the bad extent
    copies mended (by reads and by the scrubber, from the nodes' counters), the most EC
    saved at any sample, and the
    latency of ok operations before the first fault, while one was on, and between or
    after them."""
    leaders: list[str] = []
    states: dict[str, list[str]] = {}
    repairs = {"read": 0, "scrub": 0}
    ec_peak = 0
    for raw in raw_samples:
        for how, n in (raw.get("repairs") or {}).items():
            # Cumulative per node; a node that restarted counts from zero again, so the
            # highest total seen is a lower bound, never an overcount.
            repairs[how] = max(repairs.get(how, 0), int(n))
        view = raw.get("view") or {}
        # Coded data can die later (overwritten, collected): the peak says it was coded.
        ec_peak = max(ec_peak, int((view.get("usage") or {}).get("ec_savings_bytes") or 0))
        leader = view.get("leader")
        if leader and (not leaders or leaders[-1] != leader):
            leaders.append(leader)
        for n in view.get("nodes", []):
            seen = states.setdefault(str(n.get("id")), [])
            if n.get("state") and n["state"] not in seen:
                seen.append(n["state"])
    kinds: dict[str, int] = {}
    for e in events:
        if "kind" in e:
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    applied = [f for f in faults if f.via != "skipped"]
    first = min((f.start for f in applied), default=None)

    def phase(op: Op) -> str:
        if first is None or op.complete < first:
            return "before"
        on = any(f.start <= op.complete <= (f.end or math.inf) for f in applied)
        return "during" if on else "after"

    latency: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    for op in ops:
        if op.outcome == "ok":
            latency[phase(op)].append(timeline.latency_ms(op))
    return {
        "leaders": leaders,
        "node_states": states,
        "events_by_kind": dict(sorted(kinds.items())),
        "repairs": repairs,
        "ec_savings_peak_bytes": ec_peak,
        "latency_by_phase": {
            k: {
                "ops": len(v),
                "p50_ms": _round(timeline.percentile(v, 50)),
                "p90_ms": _round(timeline.percentile(v, 90)),
                "p99_ms": _round(timeline.percentile(v, 99)),
            }
            for k, v in latency.items()
        },
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _stat(check: CheckResult | None, key: str) -> Any:
    return None if check is None or check.status == "skipped" else check.stats.get(key)


def _check_json(c: CheckResult) -> dict[str, Any]:
    return {
        "name": c.name,
        "status": c.status,
        "detail": c.detail,
        "culprit": None if c.culprit is None else json.loads(next(history.dump([c.culprit]))),
    }


def describe_op(op: Op) -> str:
    return (
        f"process {op.process} {op.kind} {op.key} = {op.value!r}, invoked {op.invoke:.3f} s, "
        f"completed {op.complete:.3f} s, {op.outcome}" + (f" ({op.error})" if op.error else "")
    )


# --- the files ------------------------------------------------------------------------------
def write(
    out_dir: str,
    summary: dict[str, Any],
    ops: Sequence[Op],
    events: Sequence[dict[str, Any]],
    rows: Sequence[Row],
    faults: Sequence[FaultBand],
    checks_culprits: dict[str, Op | None],
    plots: bool = True,
) -> None:
    """Every file of the report; ``plots=False`` leaves out the PNGs (a second or so per
    report, which runs of a sweep, a swarm or a shrink do not need)."""
    os.makedirs(out_dir, exist_ok=True)
    _lines(os.path.join(out_dir, "history.jsonl"), history.dump(ops))
    _lines(os.path.join(out_dir, "events.jsonl"), (json.dumps(e, sort_keys=True) for e in events))
    with open(os.path.join(out_dir, "timeline.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(timeline.COLUMNS)
        for r in rows:
            w.writerow(["" if v is None else v for v in (getattr(r, c) for c in timeline.COLUMNS)])
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown(summary, checks_culprits))
    if plots:
        plot(out_dir, rows, faults, summary["duration_s"])


def _lines(path: str, lines: Any) -> None:
    with open(path, "w") as f:
        for line in lines:
            f.write(line + "\n")


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "not measured"
    return f"{v}{unit}"


def markdown(s: dict[str, Any], culprits: dict[str, Op | None]) -> str:
    ops = s["ops"]
    verdict = "PASSED" if s["passed"] else "FAILED"
    out = [
        f"# Experiment `{s['scenario']}` (seed {s['seed']}): {verdict}",
        "",
        f"{s['duration_s']:g} s of load ({s['elapsed_s']:g} s with setup and collection); "
        f"{ops['total']} operations: {ops['ok']} ok, {ops['fail']} failed, "
        f"{ops['unknown']} unknown; latency p50 {_fmt(ops['latency_p50_ms'], ' ms')}, "
        f"p99 {_fmt(ops['latency_p99_ms'], ' ms')}.",
        "",
        "## Checks",
        "",
        "| check | result | detail |",
        "| --- | --- | --- |",
    ]
    for c in s["checks"]:
        out.append(f"| {c['name']} | {c['status']} | {c['detail']} |")
    broken = [c for c in s["checks"] if c["status"] == "fail"]
    for c in broken:
        op = culprits.get(c["name"])
        if op is not None:
            out += ["", f"**{c['name']}** broke at: {describe_op(op)}"]
    lost, wrong = s["acknowledged_writes_lost"], s["wrong_reads"]
    un = s["unavailability"]
    rb = s["rebuild"]
    dr = s["degraded_reads"]
    out += [
        "",
        "## What happened",
        "",
        f"* acknowledged writes lost: {_fmt(lost) if lost is not None else 'not checked'}",
        f"* wrong reads: {_fmt(wrong) if wrong is not None else 'not checked'}",
        f"* kv linearizability: {s['kv_linearizable'] or 'no kv workload'}",
        f"* unavailability (no successful operation for more than 1 s): "
        f"{un['total_s']} s in all, longest {un['longest_s']} s",
    ]
    for name, ws in un["windows"].items():
        spans = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in ws)
        out.append(f"  * {name}: {spans}")
    out += [
        f"* time at reduced resiliency: {s['reduced_resiliency_s']} s",
        f"* rebuild: {_rebuild_text(rb)}",
        f"* repair traffic: {_fmt(rb.get('rebuilt_bytes'), ' bytes')} rebuilt; received by "
        f"rack {rb.get('by_rack') or '-'}; read inside racks "
        f"{_fmt(rb.get('inside_racks_bytes'), ' bytes')}, across racks "
        f"{_fmt(rb.get('across_racks_bytes'), ' bytes')} (re-replication copies)",
        f"* reads while degraded: {dr['degraded_reads']}, p50 "
        f"{_fmt(dr['degraded_p50_ms'], ' ms')}, p99 {_fmt(dr['degraded_p99_ms'], ' ms')} "
        f"(healthy: p50 {_fmt(dr['healthy_p50_ms'], ' ms')}, "
        f"p99 {_fmt(dr['healthy_p99_ms'], ' ms')}); degraded extent reads by the nodes: "
        f"{_fmt(dr['count_from_metrics'])}",
        f"* savings: {_savings_text(s['savings'])}",
        *_observed_lines(s.get("observed")),
        "",
        "## Faults",
        "",
    ]
    if not s["faults"]:
        out.append("none")
    for f in s["faults"]:
        end = "end of run" if f["end"] is None else f"{f['end']:.1f} s"
        nodes = ", ".join(f["nodes"]) or "-"
        note = f" ({f['detail']})" if f["detail"] else ""
        out.append(f"* {f['start']:.1f} s - {end}: {f['kind']} on {nodes} via {f['via']}{note}")
    out += [
        "",
        "## Plots",
        "",
        "![throughput](throughput.png)",
        "",
        "![resiliency](resiliency.png)",
        "",
    ]
    return "\n".join(out)


def _observed_lines(o: dict[str, Any] | None) -> list[str]:
    if not o:
        return []
    down = sorted(n for n, seen in o["node_states"].items() if "DOWN" in seen)
    phases = ", ".join(
        f"{k} p50 {_fmt(v['p50_ms'], ' ms')} / p90 {_fmt(v['p90_ms'], ' ms')} "
        f"/ p99 {_fmt(v['p99_ms'], ' ms')} ({v['ops']} ops)"
        for k, v in o["latency_by_phase"].items()
        if v["ops"]
    )
    events = ", ".join(f"{k} {n}" for k, n in o["events_by_kind"].items()) or "none"
    src = o.get("import_source")
    source = (
        [
            f"* import source: {src['responses']} responses, {src['broken']} broken off "
            f"part way, {src['resumed']} answering a Range request"
        ]
        if src
        else []
    )
    return [
        *source,
        f"* leaders seen, in order: {', '.join(o['leaders']) or 'none'}",
        f"* nodes seen DOWN: {', '.join(down) or 'none'}",
        f"* latency of ok operations, before the first fault / while one was on / "
        f"otherwise after it: {phases or 'no operations'}",
        f"* cluster events: {events}",
        f"* bad extent copies mended: {o['repairs']['read']} by reads, "
        f"{o['repairs']['scrub']} by the scrubber",
    ]


def _rebuild_text(rb: dict[str, Any]) -> str:
    if rb["started_s"] is None:
        return "nothing was at reduced resiliency"
    if rb["ended_s"] is None:
        return f"started at {rb['started_s']:.1f} s, not finished within the run"
    return f"{rb['started_s']:.1f} s to {rb['ended_s']:.1f} s ({rb['time_s']} s)"


def _savings_text(u: dict[str, Any]) -> str:
    if not u:
        return "not measured"
    keys = (
        "logical_bytes",
        "physical_bytes",
        "dedup_savings_bytes",
        "compression_savings_bytes",
        "ec_savings_bytes",
    )
    return ", ".join(f"{k} {u[k]}" for k in keys if k in u)


def plot(out_dir: str, rows: Sequence[Row], faults: Sequence[FaultBand], duration: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r.t + 0.5 for r in rows]

    def bands(ax: Any) -> None:
        for f in faults:
            if f.via == "skipped":
                continue
            end = duration if f.end is None else f.end
            ax.axvspan(f.start, end, color="tab:red", alpha=0.15, lw=0)
        ax.set_xlim(0, duration)
        ax.grid(alpha=0.3)

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a1.plot(t, [r.ok for r in rows], label="ok ops/s")
    a1.plot(t, [r.errors for r in rows], label="failed/unknown ops/s", color="tab:red")
    a1b = a1.twinx()
    a1b.plot(t, [r.mb_s for r in rows], label="MB/s", color="tab:green", ls="--")
    a1b.set_ylabel("MB/s")
    a1.set_ylabel("ops/s")
    a1.legend(loc="upper left", fontsize=8)
    a1.set_title("throughput and latency (shaded: faults)")
    a2.plot(t, [_nan(r.lat_p50_ms) for r in rows], label="p50")
    a2.plot(t, [_nan(r.lat_p99_ms) for r in rows], label="p99")
    a2.set_ylabel("latency (ms)")
    a2.set_xlabel("seconds")
    a2.legend(loc="upper left", fontsize=8)
    for ax in (a1, a2):
        bands(ax)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "throughput.png"), dpi=90, metadata=PNG_METADATA)
    plt.close(fig)

    fig, (b1, b2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    b1.step(t, [_nan(r.resiliency) for r in rows], where="mid", label="resiliency")
    b1.step(t, [_nan(r.nodes_up) for r in rows], where="mid", label="nodes UP")
    b1.set_ylabel("count")
    b1.legend(loc="upper left", fontsize=8)
    b1.set_title("resiliency and rebuild (shaded: faults)")
    b2.plot(t, [r.reduced_resiliency_bytes / 1e6 for r in rows], label="MB at reduced resiliency")
    b2.plot(t, [r.rebuild_bytes / 1e6 for r in rows], label="MB rebuilt per second")
    b2.set_ylabel("MB")
    b2.set_xlabel("seconds")
    b2.legend(loc="upper left", fontsize=8)
    for ax in (b1, b2):
        bands(ax)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "resiliency.png"), dpi=90, metadata=PNG_METADATA)
    plt.close(fig)


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)
