"""Reproduce Cidon et al., "Copysets" (USENIX ATC 2013): 5,000 nodes, R = 3, 1% of the
nodes fail at once (a power outage after which they do not reboot). How likely is data
loss under random replication, Copyset Replication, and the fabric's own placement?

Each row: the number of distinct copysets the scheme makes, the paper's estimate
``1 - (1 - C(F,R)/C(N,R))**copysets`` for them, and a Monte Carlo of outages over the
copysets themselves (95% Wilson interval), next to the paper's figure where it gives
one. Usage: ``python scripts/copysets.py [--trials 20000] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from fabric.reliability.copysets import (
    copyset_replication,
    loss_probability,
    random_window,
    simulate_outages,
)
from fabric.reliability.layout import cluster, rendezvous_layout

NODES = 5000
R = 3
FAILED = NODES // 100
RAMCLOUD_CHUNKS_PER_NODE = 8000
"""Chunks per node we assume for RAMCloud-like random replication (every chunk its own
random copyset); the paper's abstract gives the outcome, 99.99%."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trials", type=int, default=20000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    started = time.perf_counter()
    rows: list[tuple[str, str, int, float, str, str]] = []

    chunks = NODES * RAMCLOUD_CHUNKS_PER_NODE // R
    rows.append(
        (
            "random replication (RAMCloud-like)",
            f"N-1={NODES - 1}",
            chunks,
            loss_probability(chunks, NODES, R, FAILED),
            "(too many copysets to list)",
            "99.99% (RAMCloud)",
        )
    )
    schemes = [
        ("random replication, window", "10", random_window(NODES, R, 10), "22.8% (Facebook HDFS)"),
        ("Copyset Replication", "2", copyset_replication(NODES, R, 2, a.seed), "0.15% (RAMCloud)"),
        (
            "Copyset Replication",
            "10",
            copyset_replication(NODES, R, 10, a.seed),
            "0.78% (Facebook)",
        ),
    ]
    ids, racks = cluster(NODES, 0)
    for per_node in (3, 9):
        layout = rendezvous_layout(ids, racks, NODES * per_node // R, R, R - 1)
        sets = np.array([sorted(m) for m in layout.members], dtype=np.int32)
        scatter = sum(layout.scatter()) / NODES
        schemes.append((f"fabric rendezvous, {per_node} groups/node", f"~{scatter:.0f}", sets, "-"))
    for name, s, sets, paper in schemes:
        distinct = len({tuple(r) for r in sets.tolist()})
        mc = simulate_outages(sets, NODES, FAILED, a.trials, a.seed)
        rows.append(
            (
                name,
                s,
                distinct,
                loss_probability(distinct, NODES, R, FAILED),
                f"{100 * mc.value:.3g}% [{100 * mc.low:.3g}, {100 * mc.high:.3g}]",
                paper,
            )
        )
    groups = NODES * 1000 // R
    rows.append(
        (
            "fabric rendezvous, 1000 groups/node",
            f"N-1={NODES - 1}",
            groups,
            loss_probability(groups, NODES, R, FAILED),
            "(formula: groups ~ distinct copysets)",
            "-",
        )
    )
    print(
        f"Copysets: {NODES} nodes, R = {R}, {FAILED} nodes (1%) fail at once; "
        f"{a.trials} outages per Monte Carlo row, seed {a.seed}"
    )
    print()
    print(
        "| scheme | scatter width S | copysets | P(loss), formula | P(loss), Monte Carlo "
        "[95% CI] | paper |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, s, k, formula, mc_text, paper in rows:
        print(f"| {name} | {s} | {k:,} | {_pct(formula)} | {mc_text} | {paper} |")
    print()
    print(f"wall time {time.perf_counter() - started:.1f} s")


def _pct(p: float) -> str:
    if p > 0.9999:
        return f"{100 * p:.4f}%"
    return f"{100 * p:.3g}%" if p > 0 else "0"


if __name__ == "__main__":
    assert math.comb(FAILED, R) > 0
    main()
