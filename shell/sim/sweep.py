"""``fabric sim SCENARIO --sweep ... --seeds ...``: every point x seed, on processes or Dask.

Runs go through ``concurrent.futures.Executor``: a local ``ProcessPoolExecutor`` by
default, a Dask cluster's executor with ``--scheduler tcp://HOST:PORT`` (Dask ships the
runs; the scenario file must be readable at the same path on its workers). Jobs are
submitted in order (point, then seed) and at most ``window`` of them are in flight or
waiting to be recorded, so memory stays bounded however many seeds there are: results
are recorded strictly in submission order (a slow run holds the others back, never
reorders them), which is also what makes the output the same bytes whatever the
completion order. A run that raises is an error row; the sweep goes on.

Writes ``runs.jsonl`` (one line per run), ``sweep.csv`` and ``sweep.md`` (one row per
point, each metric over the seeds with its confidence interval) and ``plots/``.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO, TypeVar

from fabric.scenario import ScenarioError, load_scenario
from fabric.sweep import (
    Point,
    SweepError,
    apply,
    label,
    parse_seeds,
    parse_sweep,
    points,
)
from fabric.sweepstats import Summary, summarize
from shell.sim import sweep_report
from shell.sim.points import Model, UnknownModel, evaluate, find_model
from shell.sim.sweep_report import PointResult

T = TypeVar("T")
WINDOW_PER_WORKER = 4
WINDOW_MIN = 64
"""Runs in flight (or done, waiting for an earlier one): at least 4 per worker, and enough
to hide a Dask scheduler's round trip behind short runs. Bounds what the parent holds
(a run's result is a few floats) however many seeds there are."""


def run_sweep(
    scenario_path: str,
    sweep: str,
    seeds: str,
    out_dir: str,
    model: str = "full",
    scheduler: str | None = None,
    workers: int | None = None,
    stream: TextIO | None = None,
) -> int:
    """Run the sweep and write its report; 0 if every run succeeded, 1 if some failed,
    2 for a bad sweep, seed list, model or scenario."""
    err = stream or sys.stderr
    try:
        entry = find_model(model)
        grid = parse_sweep(sweep)
        _check_keys(grid, entry, model)
        seed_list = parse_seeds(seeds)
        scenario = load_scenario(scenario_path)
        pts = points(grid)
        for p in pts:
            apply(scenario, p)  # a point that cannot be one fails now, not in 1,000 runs
    except (SweepError, ScenarioError, UnknownModel) as exc:
        print(f"fabric sim: {exc}", file=err)
        return 2
    if workers is not None and workers < 1:
        print("fabric sim: --workers must be at least 1", file=err)
        return 2
    path = os.path.abspath(scenario_path)
    os.makedirs(out_dir, exist_ok=True)
    total = len(pts) * len(seed_list)
    bar = _progress(total, err)
    with (
        _executor(scheduler, workers) as (executor, slots),
        open(os.path.join(out_dir, "runs.jsonl"), "w", encoding="utf-8") as log,
    ):
        window = max(WINDOW_MIN, slots * WINDOW_PER_WORKER)
        runs = _outcomes(executor, window, path, pts, seed_list, model)
        results, first_error = _record(runs, pts, seed_list, entry, log, bar)
    bar.close()
    failed = sum(r.failed for r in results)
    sweep_report.write(out_dir, scenario.name, model, seeds, results)
    print(sweep_report.markdown_table(results), file=sys.stdout)
    print(
        f"sweep: {len(pts)} points x {len(seed_list)} seeds = {total} runs, {failed} failed;"
        f" report in {out_dir}",
        file=err,
    )
    if first_error is not None:
        p, seed, error = first_error
        print(
            f"first failure: {label(p)} seed {seed}: {error}\n  replay: fabric sim "
            f"{scenario_path} --model {model} --sweep '{label(p)}' --seeds {seed}",
            file=err,
        )
    return 1 if failed else 0


def _check_keys(grid: Mapping[str, object], entry: Model, model: str) -> None:
    for key in grid:
        if entry.keys and key not in entry.keys:
            raise SweepError(
                f"{key}: the {model} model does not use it (it uses {', '.join(entry.keys)})"
            )


def _record(
    runs: Iterator[Outcome],
    pts: Sequence[Point],
    seed_list: Sequence[int],
    entry: Model,
    log: TextIO,
    bar: _Progress,
) -> tuple[list[PointResult], tuple[Point, int, str] | None]:
    """Log every run in order and summarize each point as its last seed arrives; the
    point summaries and the first failure (point, seed, error)."""
    results: list[PointResult] = []
    first_error: tuple[Point, int, str] | None = None
    for p in pts:
        values: dict[str, list[float]] = {}
        failed = 0
        for _ in seed_list:
            seed, metrics, error = next(runs)
            log.write(_run_line(p, seed, metrics, error))
            if error is not None:
                failed += 1
                first_error = first_error or (p, seed, error)
            for name, value in (metrics or {}).items():
                values.setdefault(name, []).append(value)
            bar.advance(error is not None)
        results.append(PointResult(p, len(seed_list), failed, _summaries(values, entry)))
    return results, first_error


Outcome = tuple[int, dict[str, float] | None, str | None]
"""(seed, metrics, error) of one run: metrics when it succeeded, the error otherwise."""


def _outcomes(
    executor: cf.Executor,
    window: int,
    path: str,
    pts: Sequence[Point],
    seed_list: Sequence[int],
    model: str,
) -> Iterator[Outcome]:
    """Every run's outcome in (point, seed) order, at most ``window`` submitted ahead."""
    jobs = ((p, seed) for p in pts for seed in seed_list)
    queue: collections.deque[tuple[int, cf.Future[dict[str, float]]]] = collections.deque()
    for p, seed in jobs:
        queue.append((seed, executor.submit(evaluate, path, dict(p), seed, model)))
        if len(queue) >= window:
            yield _outcome(*queue.popleft())
    while queue:
        yield _outcome(*queue.popleft())


def _outcome(seed: int, future: cf.Future[dict[str, float]]) -> Outcome:
    try:
        return seed, future.result(), None
    except cf.BrokenExecutor:
        return seed, None, CRASHED
    except Exception as exc:  # the run's own failure (or its worker's): an error row
        return seed, None, f"{type(exc).__name__}: {exc}"


CRASHED = (
    "a worker process died (this run, or one running beside it, ended its process); "
    "the runs in flight with it are recorded as failed"
)


class _LocalPool(cf.Executor):
    """Local worker processes that start afresh when one died: a run that kills its
    process (a crash, the OOM killer) costs the runs in flight, not the sweep."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = cf.ProcessPoolExecutor(max_workers=workers)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> cf.Future[T]:
        try:
            return self.pool.submit(fn, *args, **kwargs)
        except cf.BrokenExecutor:
            self.pool.shutdown(wait=True)
            self.pool = cf.ProcessPoolExecutor(max_workers=self.workers)
            return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def _summaries(values: Mapping[str, list[float]], entry: Model) -> dict[str, Summary]:
    return {name: summarize(xs, entry.kinds.get(name, "mean")) for name, xs in values.items()}


def _run_line(
    point: Point, seed: int, metrics: Mapping[str, float] | None, error: str | None
) -> str:
    row: dict[str, Any] = {"point": point, "seed": seed}
    if error is None:
        # JSON has no NaN: a metric the run did not measure is null.
        row["metrics"] = {k: None if math.isnan(v) else v for k, v in (metrics or {}).items()}
    else:
        row["error"] = error
    return json.dumps(row, sort_keys=False) + "\n"


@contextlib.contextmanager
def _executor(scheduler: str | None, workers: int | None) -> Iterator[tuple[cf.Executor, int]]:
    """The executor and how many runs it runs at once."""
    if scheduler is None:
        slots = workers or os.cpu_count() or 1
        pool = _LocalPool(slots)
        try:
            yield pool, slots
        except BaseException:
            # Interrupted (^C): drop the queued runs instead of finishing the whole window.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return
    from distributed import Client

    # distributed's Client has no annotations; the executor it returns is a cf.Executor.
    with Client(scheduler) as client:  # type: ignore[no-untyped-call]
        slots = workers or max(1, sum(client.nthreads().values()))
        yield client.get_executor(), slots


class _Progress:
    """A tqdm bar on a terminal; a plain line every tenth of the runs otherwise."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.done = self.failed = 0
        self.bar: Any = None
        if bool(getattr(stream, "isatty", lambda: False)()):
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=stream, unit="run", desc="sweep")

    def advance(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        if self.bar is not None:
            self.bar.update(1)
            if failed:
                self.bar.set_postfix(failed=self.failed)
        elif self.done == self.total or self.done % max(1, self.total // 10) == 0:
            print(f"sweep: {self.done}/{self.total} runs, {self.failed} failed", file=self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress(total: int, stream: TextIO) -> _Progress:
    return _Progress(total, stream)
