"""What a cluster view and a scanner pass cost on the state machine alone, by store size.

    .venv/bin/python scripts/bench_metadata.py [--sizes 1000,10000,100000]

For each size N it builds a ``MetadataState`` holding N sealed extent groups (one extent
each, RF2 over five nodes, half of them in an EC container with strips) by applying
real commands, then times, median of many runs:

* **view**: ``container_views`` (totals, savings, resiliency) plus the node list, as
  ``GET /api/v1/cluster`` and ``/metrics`` compute them;
* **view, a node DOWN**: the same with one node DOWN, so resiliency must look at the
  groups on it (cost follows that answer);
* **scanner pass**: everything the scanner's jobs read when there is no work
  (``nodes.services.scanner.pass_reads``);
* **baseline**: one sorted walk over every extent-group record, which is what release
  0.1 did for each of these (three times per container per view).

The figures that matter: view and scanner pass at 100k vs 1k (flat: within 2x), and each
against the baseline at the same size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabric.extents.policy import ContainerPolicy
from fabric.metadata import keys
from fabric.metadata.commands import (
    CommitStrip,
    CreateContainer,
    CreateVdisk,
    MapWrite,
    NewEgroup,
    NewExtent,
    RegisterNode,
    SealEgroups,
    SetNodeState,
    WriteExtents,
)
from fabric.metadata.records import StripMember
from fabric.metadata.state import MetadataState
from nodes.services.accounting import container_views
from nodes.services.scanner import pass_reads

NODES = ("n1", "n2", "n3", "n4", "n5")


def build(n_groups: int) -> MetadataState:
    s = MetadataState()
    index = 0

    def apply(cmd: object) -> None:
        nonlocal index
        index += 1
        result = s.apply(index, cmd)  # type: ignore[arg-type]
        assert result.ok, result

    for node in NODES:
        apply(RegisterNode(node, f"127.0.0.1:{7100 + int(node[1:])}", ("d0",), {}))
    apply(CreateContainer("rf", ContainerPolicy(rf=2).to_dict(), 1.0))
    apply(CreateContainer("ec", ContainerPolicy(rf=2, ec_k=2, ec_m=1).to_dict(), 1.0))
    for container in ("rf", "ec"):
        apply(CreateVdisk(f"vd-{container}", container, container, 1 << 45, 1.0))
    pending_ec: list[str] = []
    for g in range(n_groups):
        container = "rf" if g % 2 else "ec"
        egid = f"eg-{g:07d}"
        replicas = (NODES[g % 5], NODES[(g + 1) % 5])
        apply(
            WriteExtents(
                f"vd-{container}",
                (NewEgroup(egid, container, replicas, replicas[0]),),
                (NewExtent(f"x{g}", egid, 0, 4096, 65536, True, g),),
                (MapWrite(g, None, f"x{g}"),),
                seal=(egid,),
            )
        )
        if container == "ec":
            pending_ec.append(egid)
            if len(pending_ec) == 2:
                data = tuple(StripMember(e, NODES[i]) for i, e in enumerate(pending_ec))
                parity = (StripMember(f"p-{egid}", NODES[2]),)
                apply(CommitStrip(f"st-{egid}", "ec", 1 << 20, 1 << 20, data, parity, 4096))
                pending_ec = []
    apply(SealEgroups(()))
    return s


def timed(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def baseline(s: MetadataState) -> int:
    return sum(1 for _, item in s.scan(keys.EGROUP) if item.value.extents)


def view(s: MetadataState) -> int:
    return len(container_views(s)) + len(s.nodes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        s = build(n)
        build_s = time.perf_counter() - t0
        runs = 200
        row = {
            "groups": n,
            "build_s": build_s,
            "view": timed(lambda s=s: view(s), runs),
            "scan": timed(lambda s=s: pass_reads(s), runs),
            "base": timed(lambda s=s: baseline(s), max(3, runs // 20)),
        }
        s.apply(s.applied_index + 1, SetNodeState("n3", "DOWN", 2.0))
        row["view_down"] = timed(lambda s=s: view(s), max(3, runs // 10))
        rows.append(row)
    first = rows[0]
    print(
        f"{'groups':>8} {'build':>8} {'view':>10} {'view/1st':>9} {'scan pass':>10} "
        f"{'scan/1st':>9} {'baseline':>10} {'view/base':>10} {'scan/base':>10} "
        f"{'view 1 DOWN':>12}"
    )
    for r in rows:
        print(
            f"{r['groups']:>8} {r['build_s']:>7.1f}s {r['view'] * 1e6:>8.1f}us "
            f"{r['view'] / first['view']:>8.2f}x {r['scan'] * 1e6:>8.1f}us "
            f"{r['scan'] / first['scan']:>8.2f}x {r['base'] * 1e3:>8.2f}ms "
            f"{r['view'] / r['base']:>10.4f} {r['scan'] / r['base']:>10.4f} "
            f"{r['view_down'] * 1e3:>10.2f}ms"
        )


if __name__ == "__main__":
    main()
