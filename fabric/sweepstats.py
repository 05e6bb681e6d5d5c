"""What one point's runs say together: each metric over the seeds, with an interval.

A model says what kind each of its metrics is (``Kind``):

* ``mean`` — a quantity per run (hours at reduced resiliency, bytes of repair traffic):
  the mean over seeds with a Student t confidence interval (the seeds are independent
  runs; for a few seeds a normal interval would be too narrow);
* ``proportion`` — an event per run, 0 or 1 (data was lost): the share of runs with it and
  a Wilson score interval, which stays inside [0, 1] and is honest at 0 of 1,000;
* ``count`` — a quantity to add up over the runs (errors, events): the total.

NaN is "not measured in this run" (repair inside racks, without racks): it is left out,
and ``n`` says how many runs count.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import stats

Kind = Literal["mean", "proportion", "count"]
KINDS: tuple[Kind, ...] = ("mean", "proportion", "count")
CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class Summary:
    kind: Kind
    n: int
    """Runs that measured it."""
    value: float
    """The mean, the share of runs, or the total; NaN when no run measured it."""
    low: float
    high: float
    """The confidence interval (NaN when it has none: counts, or too few runs)."""


def summarize(values: Sequence[float], kind: Kind, confidence: float = CONFIDENCE) -> Summary:
    """One metric of one point over its seeds."""
    assert kind in KINDS, f"unknown metric kind {kind!r}"
    xs = [float(v) for v in values if not math.isnan(v)]
    n = len(xs)
    nan = math.nan
    if n == 0:
        return Summary(kind, 0, nan, nan, nan)
    if kind == "count":
        return Summary(kind, n, math.fsum(xs), nan, nan)
    if kind == "proportion":
        if any(x not in (0.0, 1.0) for x in xs):
            raise ValueError(f"a proportion's runs must each be 0 or 1, not {sorted(set(xs))}")
        hits = round(math.fsum(xs))
        ci = stats.binomtest(hits, n).proportion_ci(confidence, method="wilson")
        return Summary(kind, n, hits / n, float(ci.low), float(ci.high))
    mean = statistics.fmean(xs)
    if n < 2:
        return Summary(kind, n, mean, nan, nan)
    sem = statistics.stdev(xs) / math.sqrt(n)
    if sem == 0:
        return Summary(kind, n, mean, mean, mean)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return Summary(kind, n, mean, float(low), float(high))
