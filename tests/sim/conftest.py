"""Helpers for simulated clusters that store data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from fabric.config import (
    ClusterConfig,
    DebugSettings,
    Timeouts,
    default_config_text,
    parse_config,
    sized_config,
)
from nodes.simcluster import SimCluster


def config(nodes: int = 5, import_allow: tuple[str, ...] = ()) -> ClusterConfig:
    """``import_allow``: the config's ``[import] allow`` (URL import's allow-list)."""
    return replace(
        sized_config(parse_config(default_config_text()), nodes), import_allow=import_allow
    )


async def chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def started(
    nodes: int = 5,
    seed: int = 1,
    import_allow: tuple[str, ...] = (),
    debug: DebugSettings | None = None,
    buggify: bool = False,
    faults: bool = False,
    timeouts: Timeouts | None = None,
) -> SimCluster:
    """A running cluster with a leader and every node registered (``debug``: nodes
    broken on purpose, for the tests that prove a checker fires; ``faults``: nodes take
    injected faults and may be paused)."""
    cfg = config(nodes, import_allow)
    cfg = cfg if debug is None else replace(cfg, debug=debug)
    cfg = cfg if timeouts is None else replace(cfg, timeouts=timeouts)
    sim = SimCluster(cfg, seed, buggify=buggify, faults=faults)
    sim.run(sim.start_all())
    sim.run(
        sim.wait_for(
            lambda: sim.leader() is not None and all(n.registered for n in sim.nodes.values()),
            20 if timeouts is None else 6 * timeouts.election_ticks * timeouts.tick_ms / 1000,
            "a leader and every node registered",
        )
    )
    return sim


@pytest.fixture
def sim() -> Iterator[SimCluster]:
    cluster = started()
    yield cluster
    cluster.close()
