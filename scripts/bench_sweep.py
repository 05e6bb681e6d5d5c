"""Sweep benchmark: one sweep on one worker (the baseline), on N local processes and on a
Dask LocalCluster of N worker processes, in one run; and the parent's memory at 10x seeds.

    .venv/bin/python scripts/bench_sweep.py [--seeds 100] [--workers 2]

The sweep is ``configs/sweeps/two-nodes-lost.toml`` with the ``placement`` model over
``policy=rf2,rf3,4+2,6+3``. Each row times ``run_sweep`` whole (submit, collect, table and
plots); the ratio is runs/s over the one-worker baseline's. The Dask cluster's start is
timed apart (it is paid once per session, not per sweep). Tables must come out the same
bytes on every engine (checked). Memory: the sweeping process's peak RSS at ``--seeds``
and at 10x as many, each in a fresh process; a ratio near 1 means it does not grow with
the seeds (results are recorded and dropped in order, at most a window in flight).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = str(ROOT / "configs" / "sweeps" / "two-nodes-lost.toml")
SWEEP = "policy=rf2,rf3,4+2,6+3"


def timed_sweep(out: Path, seeds: int, **engine: object) -> float:
    from shell.sim.sweep import run_sweep

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = run_sweep(SCENARIO, SWEEP, f"1-{seeds}", str(out), "placement", **engine)  # type: ignore[arg-type]
    assert code == 0, f"sweep failed ({code})"
    return time.perf_counter() - start


def peak_rss_mib(seeds: int, workers: int) -> float:
    code = (
        "import contextlib, io, json, resource, sys, tempfile\n"
        "from shell.sim.sweep import run_sweep\n"
        "with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):\n"
        f"    run_sweep({SCENARIO!r}, {SWEEP!r}, '1-{seeds}', d, 'placement', workers={workers},"
        " stream=io.StringIO())\n"
        "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    runs = 4 * args.seeds
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        rows.append(
            ("1 local process (baseline)", timed_sweep(base / "one", args.seeds, workers=1))
        )
        rows.append(
            (
                f"{args.workers} local processes",
                timed_sweep(base / "local", args.seeds, workers=args.workers),
            )
        )
        from distributed import LocalCluster

        start = time.perf_counter()
        with LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster:
            started = time.perf_counter() - start
            took = timed_sweep(base / "dask", args.seeds, scheduler=cluster.scheduler_address)
            rows.append((f"Dask LocalCluster, {args.workers} workers", took))
        tables = {
            name: [(base / name / f).read_bytes() for f in ("sweep.csv", "sweep.md")]
            for name in ("one", "local", "dask")
        }
        same = tables["one"] == tables["local"] == tables["dask"]
    baseline = runs / rows[0][1]
    print(f"sweep {SWEEP} x {args.seeds} seeds = {runs} runs (placement model)\n")
    print("| engine | wall s | runs/s | vs 1 process |")
    print("|---|---|---|---|")
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.2f} | {runs / seconds:.0f} | {runs / seconds / baseline:.2f}x |"
        )
    print(f"\nDask cluster start: {started:.2f} s (apart); tables identical on all: {same}")
    low = peak_rss_mib(args.seeds, args.workers)
    high = peak_rss_mib(10 * args.seeds, args.workers)
    print(
        f"sweeping process peak RSS: {low:.0f} MiB at {args.seeds} seeds, {high:.0f} MiB at "
        f"{10 * args.seeds} seeds: {high / low:.2f}x"
    )


if __name__ == "__main__":
    main()
