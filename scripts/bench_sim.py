"""How fast the full simulator runs: simulated time over wall time, and memory, by size.

    .venv/bin/python scripts/bench_sim.py                  # 25 nodes, one simulated hour
    .venv/bin/python scripts/bench_sim.py --nodes 50,100,200 --virtual-s 600
    .venv/bin/python scripts/bench_sim.py --modes loaded --rate 1 --block-bytes 262144
    .venv/bin/python scripts/bench_sim.py --timing default --payload random --virtual-s 60
    .venv/bin/python scripts/bench_sim.py --nodes 1000 --racks 40 --timing large-cluster \
        --virtual-s 86400 --rate 0.0166 --sample-every 600     # issue 13's simulated day

Each size runs in a process of its own (so its peak RSS is its own): a cluster of N
nodes (three voters, racks of five) on virtual time with every checker on, `[cluster]
timing = "long-run"` and a timeline sample a minute, a steady writer (1 MiB stamped
blocks, one every 4 s, each read back; sequential: groups fill and seal; a zstd
container) and two failures: one node killed for good at a third of the run, whose
data the cluster then rebuilds, and another restarted at two thirds. This is `fabric
sim` without the report: the scenario machinery of shell/sim/runner.py.

The figure is virtual seconds / wall seconds (the baseline is real time itself: 1.0 is
as fast as `fabric run`). The same run also times the idle cluster (no workload, no
fault) for the same virtual time, which is what the protocol alone costs at that size.
Issue 13's targets: 25 nodes with a workload and failures at >= 50x over an hour; 1,000
nodes over 40 racks, one virtual day, under 10 minutes of wall time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCENARIO = """
name = "bench-sim-{nodes}"
duration_s = {duration}
sample_every_s = {sample}

[cluster]
nodes = {nodes}
voters = 3
racks = {racks}
{down}
rebuild_delay_s = 1
timing = "{timing}"

[[containers]]
name = "data"
rf = 2
compression = "{compression}"

{workload}
"""
WORKLOAD = """
[[workloads]]
kind = "vdisk-writer"
rate = {rate}
block_bytes = {block}
vdisk_bytes = 1073741824
pattern = "sequential"
payload = "{payload}"

[[faults.at]]
at_s = {kill_at}
kind = "node-kill"
target = {{ nodes = ["n{victim}"] }}

[[faults.at]]
at_s = {restart_at}
kind = "node-restart"
target = {{ nodes = ["n{other}"] }}
"""


def one(
    nodes: int, virtual_s: float, seed: int, loaded: bool, load: argparse.Namespace
) -> dict[str, float]:
    """Run in a child: one size, one mode; wall s, virtual s, peak RSS MiB."""
    import contextlib
    import io
    import logging

    from fabric.scenario import parse_scenario
    from shell.experiment.runner import Progress
    from shell.sim.runner import run_scenario

    logging.getLogger().setLevel(logging.ERROR)
    workload = (
        WORKLOAD.format(
            kill_at=round(virtual_s / 3, 1),
            victim=nodes,
            restart_at=round(2 * virtual_s / 3, 1),
            other=nodes - 1,
            rate=load.rate,
            block=load.block_bytes,
            payload=load.payload,
        )
        if loaded
        else ""
    )
    racks = load.racks or (max(1, nodes // 5) if nodes >= 10 else 0)
    text = SCENARIO.format(
        nodes=nodes,
        duration=virtual_s,
        racks=racks,
        workload=workload,
        timing=load.timing,
        sample=load.sample_every,
        down="down_after_ms = 2000" if load.timing == "default" else "",
        compression="zstd" if load.payload == "stamped" else "none",
    )
    if not loaded:
        text += '\n[[workloads]]\nkind = "kv-cas"\nrate = 0.2\n'
    scenario = parse_scenario(text, f"bench-sim-{nodes}")
    quiet = io.StringIO()
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(quiet):
        began = time.perf_counter()
        result = run_scenario(scenario, seed, out, "", Progress(stream=quiet))
        wall = time.perf_counter() - began
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": wall, "virtual_s": result.simulated_s, "rss_mib": rss, "code": result.code}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", default="25", help="cluster sizes, comma-separated (default 25)")
    p.add_argument("--virtual-s", type=float, default=3600.0, help="virtual seconds of load")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--racks", type=int, default=0, help="racks (default: one per five nodes)")
    p.add_argument(
        "--timing", default="long-run", help="[cluster] timing: long-run, large-cluster, default"
    )
    p.add_argument("--sample-every", type=float, default=60.0, help="timeline sample period, s")
    p.add_argument("--rate", type=float, default=0.25, help="writer blocks per second")
    p.add_argument("--block-bytes", type=int, default=1 << 20, help="writer block size")
    p.add_argument(
        "--payload",
        default="stamped",
        help="writer payload: stamped (a zstd container stores it small), or random",
    )
    p.add_argument("--modes", default="idle,loaded", help="which runs per size")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        nodes, loaded = a.child.split(":")
        print(json.dumps(one(int(nodes), a.virtual_s, a.seed, loaded == "1", a)))
        return 0
    rows = []
    for n in (int(x) for x in a.nodes.split(",")):
        modes = a.modes.split(",")
        for loaded in [m == "loaded" for m in ("idle", "loaded") if m in modes]:
            child = [sys.executable, __file__, "--child", f"{n}:{int(loaded)}"]
            child += ["--virtual-s", str(a.virtual_s), "--seed", str(a.seed)]
            child += ["--timing", a.timing, "--sample-every", str(a.sample_every)]
            child += ["--rate", str(a.rate), "--block-bytes", str(a.block_bytes)]
            child += ["--payload", a.payload, "--racks", str(a.racks)]
            done = subprocess.run(child, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            r = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((n, "writer + node loss" if loaded else "idle (kv trickle)", r))
            print(f"  {n} nodes, {rows[-1][1]}: done", file=sys.stderr, flush=True)
    print(
        f"{'nodes':>6} {'run':<20} {'virtual s':>9} {'wall s':>8} {'virtual/wall':>12} "
        f"{'peak RSS MiB':>12} {'MiB/100 nodes':>13} {'checks':>6}"
    )
    for n, mode, r in rows:
        ratio = r["virtual_s"] / r["wall_s"]
        print(
            f"{n:>6} {mode:<20} {r['virtual_s']:>9.1f} {r['wall_s']:>8.1f} {ratio:>11.2f}x "
            f"{r['rss_mib']:>12.0f} {r['rss_mib'] * 100 / n:>13.0f} "
            f"{'pass' if r['code'] == 0 else 'FAIL':>6}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
