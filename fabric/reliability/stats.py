"""Confidence intervals for the model's estimates (``statistics`` and ``math`` only)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def _z(confidence: float) -> float:
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def mean_ci(samples: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """The mean of independent samples, with a normal-approximation interval."""
    assert samples, "no samples"
    mean = statistics.fmean(samples)
    if len(samples) < 2:
        return Estimate(mean, -math.inf, math.inf)
    half = _z(confidence) * statistics.stdev(samples) / math.sqrt(len(samples))
    return Estimate(mean, mean - half, mean + half)


def proportion_ci(hits: int, trials: int, confidence: float = CONFIDENCE) -> Estimate:
    """Wilson's score interval for ``hits`` successes in ``trials`` (sound near 0 and 1)."""
    assert 0 <= hits <= trials and trials > 0
    z = _z(confidence)
    p = hits / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    low = 0.0 if hits == 0 else max(0.0, centre - half)
    high = 1.0 if hits == trials else min(1.0, centre + half)
    return Estimate(p, low, high)


def poisson_rate_ci(events: int, exposure: float, confidence: float = CONFIDENCE) -> Estimate:
    """A rate from ``events`` counted over ``exposure`` (e.g. years): the interval of
    the count by the square-root (variance-stabilised) normal approximation; with no
    event, the upper end is the "rule of three" -ln(1 - confidence)."""
    assert exposure > 0 and events >= 0
    z = _z(confidence)
    if events == 0:
        return Estimate(0.0, 0.0, -math.log(1 - confidence) / exposure)
    root = math.sqrt(events)
    low = max(0.0, root - z / 2) ** 2
    high = (root + z / 2) ** 2
    return Estimate(events / exposure, low / exposure, high / exposure)


def inverse(rate: Estimate) -> Estimate:
    """A mean time between events from their rate (MTTDL from the loss rate)."""
    return Estimate(
        math.inf if rate.value == 0 else 1 / rate.value,
        math.inf if rate.high == 0 else 1 / rate.high,
        math.inf if rate.low == 0 else 1 / rate.low,
    )
