"""How often the Monte Carlo and the closed form disagree, over many seeds.

The parameters of ``tests/unit/test_reliability.py`` (frequent failures, slow
rebuilds, 15 nodes in 5 racks; 100 trials x 10 years per seed, 99% intervals). For each
policy: how many seeds put the closed form outside the interval, per figure, and one
seed's values. Usage: ``python scripts/reliability_agreement.py [--seeds 20]``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from fabric.failures import FailureSpec
from fabric.reliability.layout import cluster, rendezvous_layout
from fabric.reliability.model import simulate

DAY_S = 86400.0
FREQUENT = FailureSpec(
    node_afr=0.3,
    disk_afr=0.15,
    disks_per_node=2,
    replacement_s=4 * DAY_S,
    disk_replacement_s=DAY_S,
    repair_delay_s=3600,
    repair_time_s=5 * DAY_S,
    node_bytes=1e12,
)
RF3 = replace(FREQUENT, node_afr=0.63, disk_afr=0.0, disks_per_node=1, repair_time_s=10 * DAY_S)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=20)
    a = p.parse_args()
    ids, racks = cluster(15, 5)
    print("| policy | groups lost/yr | bytes at risk | MTTDL yr | P(loss)/yr | seeds outside |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, width, tol, data, groups, spec in (
        ("RF2", 2, 1, 1, 150, FREQUENT),
        ("EC 2+1", 3, 1, 2, 100, FREQUENT),
        ("RF3", 3, 2, 1, 300, RF3),
    ):
        layout = rendezvous_layout(ids, racks, groups, width, tol, data)
        out = {"lost": 0, "risk": 0, "mttdl": 0, "p": 0}
        for seed in range(1, a.seeds + 1):
            s = simulate(layout, spec, 10, 100, seed, confidence=0.99)
            c = s.closed
            out["lost"] += not s.groups_lost_per_year.contains(c.groups_lost_per_year)
            out["risk"] += not s.bytes_at_risk.contains(c.bytes_at_risk)
            out["mttdl"] += not s.mttdl_years.contains(c.mttdl_years)
            out["p"] += not s.p_loss_per_year.contains(c.p_loss_per_year)
        print(
            f"| {name} | {s.groups_lost_per_year.value:.3g} vs {c.groups_lost_per_year:.3g} "
            f"| {s.bytes_at_risk.value / 1e9:.1f} GB vs {c.bytes_at_risk / 1e9:.1f} GB "
            f"| {s.mttdl_years.value:.3g} vs {c.mttdl_years:.3g} "
            f"| {s.p_loss_per_year.value:.3g} vs {c.p_loss_per_year:.3g} "
            f"| {', '.join(f'{k} {v}' for k, v in out.items())} (of {a.seeds}) |"
        )


if __name__ == "__main__":
    main()
