"""pytest plugin used by ``scripts/soak.sh``: run one shard of a seeded suite.

With ``SOAK_SHARD=i/n`` only the tests parametrized by ``seed`` whose seed is ``i`` modulo
``n`` are kept; everything else in the file is deselected, so n shards together run each
seed exactly once and nothing else. Modulo, not ranges: seeds of one suite cost about the
same on average, so the shards finish together. Without ``SOAK_SHARD`` it does nothing.
"""

from __future__ import annotations

import os

import pytest


def _shard() -> tuple[int, int] | None:
    spec = os.environ.get("SOAK_SHARD")
    if not spec:
        return None
    index, _, count = spec.partition("/")
    shard = (int(index), int(count))
    if not 0 <= shard[0] < shard[1]:
        raise pytest.UsageError(f"SOAK_SHARD={spec!r}: want i/n with 0 <= i < n")
    return shard


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = _shard()
    if shard is None:
        return
    index, count = shard
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        seed = callspec.params.get("seed") if callspec is not None else None
        mine = isinstance(seed, int) and seed % count == index
        (keep if mine else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)
