"""Delta debugging of fault schedules (fabric.shrink.ddmin)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.shrink import ddmin


def test_two_faults_that_fail_only_together_are_found_among_forty() -> None:
    steps = [f"fault-{i}" for i in range(40)]
    culprits = {"fault-7", "fault-31"}
    shrunk = ddmin(steps, lambda sub: culprits <= set(sub))
    assert shrunk.steps == ["fault-7", "fault-31"]
    assert shrunk.tests < 60  # far fewer reruns than the 2**40 subsets


def test_the_result_keeps_the_schedule_order() -> None:
    steps = [5, 1, 4, 2, 3]
    shrunk = ddmin(steps, lambda sub: 4 in sub and 2 in sub)
    assert shrunk.steps == [4, 2]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=24),
    seed=st.integers(min_value=0, max_value=2**32),
    k=st.integers(min_value=1, max_value=3),
)
def test_the_result_fails_and_is_one_minimal(n: int, seed: int, k: int) -> None:
    """Whatever the failing condition (here: any of a few seeded sets of steps all
    present), the result still fails and dropping any one step makes it pass."""
    rng = random.Random(seed)
    steps = list(range(n))
    causes = [set(rng.sample(steps, min(k, n))) for _ in range(rng.randint(1, 3))]

    def fails(sub: list[int]) -> bool:
        return any(c <= set(sub) for c in causes)

    shrunk = ddmin(steps, fails)
    assert fails(shrunk.steps)
    for drop in range(len(shrunk.steps)):
        assert not fails(shrunk.steps[:drop] + shrunk.steps[drop + 1 :]), (seed, shrunk.steps)


def test_each_subset_runs_once_and_the_budget_holds() -> None:
    runs: list[tuple[int, ...]] = []

    def fails(sub: list[int]) -> bool:
        runs.append(tuple(sub))
        return {3, 9, 14} <= set(sub)

    shrunk = ddmin(list(range(20)), fails, max_tests=8)
    assert len(runs) == len(set(runs)) == shrunk.tests <= 8
    assert {3, 9, 14} <= set(shrunk.steps)  # the best failing subset within the budget


def test_a_schedule_that_passes_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fail"):
        ddmin([1, 2, 3], lambda sub: False)


def test_a_single_needed_step_is_found_exhaustively() -> None:
    for n, culprit in itertools.product(range(1, 9), range(8)):
        if culprit < n:
            assert ddmin(list(range(n)), lambda sub, c=culprit: c in sub).steps == [culprit]
