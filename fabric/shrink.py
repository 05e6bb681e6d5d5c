"""Shrinking a failing fault schedule: delta debugging (Zeller and Hildebrandt, "Simplifying
and Isolating Failure-Inducing Input", TSE 2002).

A simulated run that fails under forty faults is hard to read; the same failure under
two is a bug report. ``ddmin`` takes the schedule and a test that reruns the scenario
with a subset of it (same seed, so everything else replays exactly) and returns a
subset that still fails and is *1-minimal*: dropping any one of its steps makes the
failure go away. The test is the expensive part (a whole simulated run), so each
subset is tried at most once.

Pure: the caller supplies the test and decides what "still fails" means (the same
checker failing, not just any failure, so the shrink does not wander to another bug).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Shrunk(Generic[T]):
    steps: list[T]
    """The smallest failing subset found, in the schedule's order."""
    tests: int
    """How many distinct subsets were run."""
    tried: list[tuple[int, bool]] = field(default_factory=list)
    """(subset size, failed) of every run, in order: the shrink's progress."""


def ddmin(
    steps: Sequence[T],
    fails: Callable[[list[T]], bool],
    max_tests: int = 200,
    on_test: Callable[[int, bool], None] | None = None,
) -> Shrunk[T]:
    """A 1-minimal failing subset of ``steps`` (or the best found in ``max_tests`` runs).

    ``fails(subset)`` reruns with ``subset`` (kept in the original order) and says
    whether the failure is still there; the whole schedule must fail. ``on_test`` hears
    (size, failed) after each run, for progress.
    """
    order = list(range(len(steps)))
    seen: dict[tuple[int, ...], bool] = {}
    result = Shrunk[T](steps=[], tests=0)

    def test(indexes: list[int]) -> bool:
        key = tuple(sorted(indexes))
        if key not in seen:
            if result.tests >= max_tests:
                return False  # out of budget: treat as passing, keep what we have
            result.tests += 1
            seen[key] = fails([steps[i] for i in key])
            result.tried.append((len(key), seen[key]))
            if on_test is not None:
                on_test(len(key), seen[key])
        return seen[key]

    if not test(order):
        raise ValueError("the whole schedule does not fail: nothing to shrink")
    current = order
    n = 2
    while len(current) >= 2:
        chunks = _split(current, n)
        reduced = False
        for chunk in chunks:  # a chunk alone fails: keep just it
            if test(chunk):
                current, n, reduced = chunk, 2, True
                break
        if not reduced:
            for chunk in chunks:  # the rest without a chunk fails: drop the chunk
                dropped = set(chunk)
                rest = [i for i in current if i not in dropped]
                if test(rest):  # with two chunks, the rest is the other chunk: cached
                    current, n, reduced = rest, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(current):
                break  # every single step is needed: 1-minimal
            n = min(len(current), 2 * n)
    result.steps = [steps[i] for i in sorted(current)]
    return result


def _split(items: list[int], n: int) -> list[list[int]]:
    """``items`` in ``n`` contiguous chunks of near-equal size."""
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        if end > start:
            out.append(items[start:end])
        start = end
    return out
