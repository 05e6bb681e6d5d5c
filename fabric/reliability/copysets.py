"""Correlated failures and placement: Cidon et al., "Copysets" (USENIX ATC 2013).

A *copyset* is a set of ``R`` nodes that together hold every replica of some chunk.
When ``F`` nodes fail at once (a power outage after which some nodes do not reboot),
data is lost exactly when some copyset lies inside the failed set. With ``K`` distinct
copysets, each failing with probability ``C(F, R) / C(N, R)``, the paper's estimate is
``1 - (1 - C(F, R) / C(N, R)) ** K``: placement decides ``K``. Random replication with
thousands of chunks per node makes ``K`` astronomically large; Copyset Replication keeps
``K = S / (R - 1) * N / R`` for a scatter width ``S``.

Schemes here (each returns its copysets, node indexes, as an array):

* ``random_window``: the first replica on a uniform node, the other ``R - 1`` drawn from
  the ``S`` nodes after it on a ring (random replication with scatter width ``S``);
  plain random replication (``S = N - 1``) has as many copysets as chunks, too many to
  list: ``loss_probability`` takes their count;
* ``copyset_replication``: ``S / (R - 1)`` random permutations, each cut into groups of
  ``R`` consecutive nodes (the paper's algorithm);
* the fabric's own rendezvous placement comes from ``layout.rendezvous_layout``.
"""

from __future__ import annotations

import math
import random
from itertools import combinations

import numpy as np
import numpy.typing as npt

from fabric.reliability.stats import Estimate, proportion_ci

Copysets = npt.NDArray[np.int32]


def loss_probability(copysets: int, nodes: int, r: int, failed: int) -> float:
    """The paper's estimate: ``copysets`` distinct sets, each inside the failed set with
    probability ``C(failed, r) / C(nodes, r)``, independently."""
    p = math.comb(failed, r) / math.comb(nodes, r)
    return -math.expm1(copysets * math.log1p(-p))


def random_window(nodes: int, r: int, scatter: int) -> Copysets:
    """Random replication with scatter width ``scatter``: the first replica on any node,
    the other ``r - 1`` among the ``scatter`` nodes after it on a ring. With thousands
    of chunks per node every one of the ``C(scatter, r - 1)`` choices of each primary is
    used, so the copysets are all of them (enumerated, not drawn)."""
    assert r - 1 <= scatter < nodes
    rows = [
        sorted([i, *((i + o) % nodes for o in offs)])
        for i in range(nodes)
        for offs in combinations(range(1, scatter + 1), r - 1)
    ]
    return np.unique(np.array(rows, dtype=np.int32), axis=0)


def copyset_replication(nodes: int, r: int, scatter: int, seed: int) -> Copysets:
    """The paper's Copyset Replication: ``ceil(S / (R - 1))`` permutations of the nodes,
    each cut into ``nodes // r`` copysets of ``r`` consecutive nodes."""
    rng = random.Random(f"copysets:{seed}")
    perms = math.ceil(scatter / (r - 1))
    sets: list[list[int]] = []
    for _ in range(perms):
        order = list(range(nodes))
        rng.shuffle(order)
        sets.extend(sorted(order[i : i + r]) for i in range(0, nodes - r + 1, r))
    return np.unique(np.array(sets, dtype=np.int32), axis=0)


def simulate_outages(
    copysets: Copysets, nodes: int, failed: int, trials: int, seed: int
) -> Estimate:
    """Share of outages (``failed`` uniform nodes each) that lose data, with its
    interval: the Monte Carlo next to ``loss_probability``."""
    rng = random.Random(f"outages:{seed}")  # never the stream a layout was drawn from
    # Copysets are sorted rows: those whose smallest node is i are rows[start[i]:start[i+1]],
    # and only those of a failed smallest node can lie inside the failed set.
    rows = np.unique(np.sort(copysets, axis=1), axis=0)
    start = np.searchsorted(rows[:, 0], np.arange(nodes + 1))
    hits = 0
    down = np.zeros(nodes, dtype=bool)
    for _ in range(trials):
        chosen = rng.sample(range(nodes), failed)
        down[chosen] = True
        for i in chosen:
            block = rows[start[i] : start[i + 1]]
            if len(block) and bool(down[block].all(axis=1).any()):
                hits += 1
                break
        down[chosen] = False
    return proportion_ci(hits, trials)
