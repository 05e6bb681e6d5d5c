"""A simulation runs with sparse cyclic garbage collection, and leaves the process's
collector as it found it: a test process runs hundreds of simulations, and a real node
process never runs one."""

from __future__ import annotations

import gc

import pytest

from fabric.sim.loop import SIM_GC_THRESHOLD
from tests.sim.conftest import started


def test_a_run_collects_sparsely_and_restores_the_thresholds_even_when_it_fails() -> None:
    before = gc.get_threshold()
    assert before != SIM_GC_THRESHOLD
    seen: list[tuple[int, int, int]] = []

    async def look() -> None:
        seen.append(gc.get_threshold())

    async def fail() -> None:
        seen.append(gc.get_threshold())
        raise RuntimeError("the workload broke")

    with started(nodes=3, seed=2) as sim:
        sim.run(look())
        assert gc.get_threshold() == before
        with pytest.raises(RuntimeError, match="the workload broke"):
            sim.run(fail())
        assert gc.get_threshold() == before
    assert seen == [SIM_GC_THRESHOLD, SIM_GC_THRESHOLD]
