"""What the simulator's hardware models cost in wall time: one rebuild story, with and
without ``[hardware]``.

    .venv/bin/python scripts/bench_hardware.py [--rounds 3] [--size-mib 40] [--seed 0]

The story is tests/sim/test_rebuild_sim.py's biggest (5 nodes, RF2): elect, write
``--size-mib``, crash a node holding copies, wait until every group has two copies
again. It runs with no model (the baseline: the simulator as it always was) and with
disks and links modelled (latencies, bandwidths, jitter, a slower cross-rack link over
two racks). Rounds alternate so drift hits both alike. The table gives medians; the
figure is modelled / baseline wall time. Virtual time differs between the two (the
model makes the disks and links slower), so the table gives it too.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabric.hardware import DiskSpec, HardwareSpec, NetworkSpec
from nodes.simcluster import SimCluster
from tests.sim.conftest import config
from tests.sim.test_rebuild_sim import leader_state, under_replicated, write

MiB = 1 << 20
MODEL = HardwareSpec(
    disk=DiskSpec(
        read_latency_ms=0.1, write_latency_ms=0.05, sync_latency_ms=1.0, bandwidth_mb_s=500
    ),
    network=NetworkSpec(
        latency_ms=0.05,
        jitter_ms=0.2,
        jitter="exponential",
        bandwidth_mb_s=1250,
        cross_rack_latency_ms=0.3,
        cross_rack_bandwidth_mb_s=250,
    ),
)


def story(hardware: HardwareSpec | None, size_mib: int, seed: int) -> tuple[float, float, int]:
    """(wall s, virtual s, messages) of one run."""
    base = config(5)
    nodes = tuple(replace(n, labels={"rack": f"r{i % 2}"}) for i, n in enumerate(base.nodes))
    sim = SimCluster(replace(base, nodes=nodes), seed=seed, hardware=hardware)
    began = time.perf_counter()
    try:
        sim.run(sim.start_all())
        sim.run(sim.wait_for(lambda: all(n.registered for n in sim.nodes.values()), 30, "up"))
        sim.run(write(sim, "a", random.Random(seed).randbytes(size_mib * MiB)))
        victim = next(n for n in sorted(leader_state(sim).idx.egroups_on) if n != sim.leader())
        sim.crash(victim)
        sim.run(sim.wait_for(lambda: not under_replicated(sim, 2), 600, "full RF2 again"))
        return time.perf_counter() - began, sim.loop.time(), sim.net.sent
    finally:
        sim.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    runs: dict[str, list[tuple[float, float, int]]] = {"none": [], "modelled": []}
    for _ in range(args.rounds):
        runs["none"].append(story(None, args.size_mib, args.seed))
        runs["modelled"].append(story(MODEL, args.size_mib, args.seed))
    print(f"rebuild story, 5 nodes, {args.size_mib} MiB, seed {args.seed}, {args.rounds} rounds")
    print(f"{'hardware':<10} {'wall s':>8} {'virtual s':>10} {'messages':>9} {'virt/wall':>10}")
    medians = {}
    for name, rs in runs.items():
        wall = statistics.median(r[0] for r in rs)
        virtual = statistics.median(r[1] for r in rs)
        sent = int(statistics.median(r[2] for r in rs))
        medians[name] = wall
        print(f"{name:<10} {wall:>8.2f} {virtual:>10.2f} {sent:>9} {virtual / wall:>10.1f}")
    print(f"modelled / none wall time: {medians['modelled'] / medians['none']:.2f}")


if __name__ == "__main__":
    main()
