"""Swarm testing: each seed draws its own fault mix (fabric.swarm)."""

from __future__ import annotations

from collections import Counter

import pytest

from fabric.scenario import FAULT_KINDS, nemesis_steps, target_problem
from fabric.swarm import mix

KINDS = ("node-kill", "node-restart", "net-partition", "net-loss", "disk-slow", "disk-fail")


def test_a_seed_always_draws_the_same_mix() -> None:
    assert mix(42, KINDS) == mix(42, KINDS)
    assert mix(42, KINDS).describe() == mix(42, KINDS).describe()


def test_seeds_spread_over_every_kind_subset_size_and_buggify() -> None:
    mixes = [mix(seed, KINDS) for seed in range(300)]
    kinds = Counter(k for m in mixes for k in m.nemesis.kinds)
    assert set(kinds) == set(KINDS)
    sizes = Counter(len(m.nemesis.kinds) for m in mixes)
    assert set(sizes) >= {1, 2, 3, 4, 5}  # not every run gets every kind: that is the point
    assert 0.3 < sum(m.buggify for m in mixes) / len(mixes) < 0.7
    assert len({m.nemesis.mean_interval_s for m in mixes}) > 250


def test_every_mix_is_a_valid_nemesis_whose_schedule_uses_only_its_kinds() -> None:
    for seed in range(100):
        m = mix(seed, KINDS)
        assert m.nemesis.kinds and set(m.nemesis.kinds) <= set(KINDS) <= set(FAULT_KINDS)
        assert all(target_problem(t) is None for t in m.nemesis.targets)
        steps = nemesis_steps(m.nemesis, 300.0, seed)
        assert {s.kind for s in steps} <= set(m.nemesis.kinds)
        assert all(s.at_s + (s.duration_s or 0) <= 300.0 for s in steps)


def test_no_kinds_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        mix(1, ())
