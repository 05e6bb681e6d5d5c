"""Benchmark of the reliability model: 10,000 nodes x 10 simulated years.

For each size it places the groups (the fabric's rendezvous rule), runs the Monte Carlo
trials and prints: placement time, model time, simulated years per wall second (the
figure: simulated time / wall time; CPU seconds beside it, as the machine may be
shared), and events per trial. The 1,000-node row, run in
the same process, is the baseline the 10,000-node row is compared with. The failure
processes come from ``configs/reliability/rf3-vs-ec.toml`` (its RF3 container).

Usage: ``python scripts/bench_reliability.py [--trials 50] [--years 10]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fabric.reliability.layout import cluster, rendezvous_layout
from fabric.reliability.model import simulate
from fabric.scenario import load_scenario
from shell.sim.reliability import GROUPS_PER_NODE

SCENARIO = Path(__file__).parents[1] / "configs" / "reliability" / "rf3-vs-ec.toml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--years", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    spec = load_scenario(str(SCENARIO)).failures
    print(f"reliability model, RF3, {a.trials} trials x {a.years:g} years, seed {a.seed}")
    print(
        f"{'nodes':>7} {'racks':>6} {'groups':>8} {'place s':>8} {'model s':>8} "
        f"{'model cpu s':>11} "
        f"{'events/trial':>12} {'sim yr / wall s':>16} {'P(loss)/yr [95% CI]':>30} {'closed':>9}"
    )
    rates = {}
    for nodes, racks in ((1000, 25), (10000, 250)):
        ids, rack_of = cluster(nodes, racks)
        t0 = time.perf_counter()
        layout = rendezvous_layout(ids, rack_of, nodes * GROUPS_PER_NODE // 3, 3, 2)
        t1, c1 = time.perf_counter(), time.process_time()
        s = simulate(layout, spec, a.years, a.trials, a.seed)
        t2, c2 = time.perf_counter(), time.process_time()
        rates[nodes] = a.trials * a.years / (t2 - t1)
        e = s.p_loss_per_year
        ci = f"{e.value:.3g} [{e.low:.3g}, {e.high:.3g}]"
        print(
            f"{nodes:>7} {racks:>6} {len(layout.members):>8} {t1 - t0:>8.1f} {t2 - t1:>8.1f} "
            f"{c2 - c1:>11.1f} "
            f"{s.events_per_trial:>12.0f} {rates[nodes]:>16.1f} {ci:>30} "
            f"{s.closed.p_loss_per_year:>9.3g}"
        )
    print(
        f"10,000 vs 1,000 nodes: {rates[1000] / rates[10000]:.1f}x the wall time per "
        "simulated year for 10x the nodes (events scale with nodes)"
    )


if __name__ == "__main__":
    main()
