"""Write benchmark: PUT of random data beside the disk's own limit, in one run.

    .venv/bin/python scripts/bench_write.py [--size-mib 1024] [--rounds 1] [--clients 4]

For RF2 and RF3 on a local 3-node cluster (no dedup, no compression: random data gives
neither a gain), each round measures, back to back:
* the limit: the same bytes written to RF files at once, one thread each, every 4 MiB
  fdatasync'ed (what the fabric promises per batch), in MB/s of source bytes;
* one client streaming the file into a vdisk (``PUT /api/v1/vdisks/{id}/data``);
* ``--clients`` clients at once, each streaming its share into a vdisk of its own
  through a different node (client i starts at node i mod 3).
The table gives the median MB/s over the rounds and the ratios to the limit; then the
peak RSS of each node. Rates are MB/s (10^6 bytes a second).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.benchkit import (
    cluster_root,
    disk_write_limit,
    local_cluster,
    node_pids,
    peak_rss_mib,
    random_file,
    rate,
)
from shell.client import FabricClient


async def put(urls: list[str], container: str, name: str, src: Path) -> None:
    size = src.stat().st_size
    async with FabricClient(urls, timeout_s=3600) as client:
        await client.create_vdisk(name, container, size)
        await client.write_vdisk(name, str(src))


async def fabric_write(urls: list[str], rf: int, srcs: list[Path], tag: str) -> float:
    """MB/s of all ``srcs`` written at once, one client each, into fresh vdisks."""
    container = f"rf{rf}"
    async with FabricClient(urls) as client:
        if not any(c["name"] == container for c in await client.containers()):
            await client.create_container(container, rf=rf)
    t0 = time.perf_counter()
    # Each client starts at another node, as VMs on different hosts would.
    await asyncio.gather(
        *(
            put(urls[i % len(urls) :] + urls[: i % len(urls)], container, f"{tag}-{i}", src)
            for i, src in enumerate(srcs)
        )
    )
    seconds = time.perf_counter() - t0
    async with FabricClient(urls) as client:
        for i in range(len(srcs)):
            await client.delete_vdisk(f"{tag}-{i}")
    return rate(sum(s.stat().st_size for s in srcs), seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    results: dict[tuple[int, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp_s:
        tmp = Path(tmp_s)
        src = random_file(tmp / "random.img", args.size_mib)
        share = max(1, args.size_mib // args.clients)
        parts = [random_file(tmp / f"part{i}.img", share, seed=10 + i) for i in range(args.clients)]
        with local_cluster(tmp, 3) as cfg:
            urls = [n.url for n in cfg.nodes]
            for r in range(args.rounds):
                for rf in (2, 3):
                    for label, srcs in (("1 client", [src]), (f"{args.clients} clients", parts)):
                        limit = disk_write_limit(src, rf, tmp)
                        ours = asyncio.run(fabric_write(urls, rf, srcs, f"r{r}rf{rf}{len(srcs)}"))
                        results.setdefault((rf, label), []).append((limit, ours))
            rss = {n: peak_rss_mib(pid) for n, pid in node_pids(cluster_root(tmp, 3)).items()}
    print(
        f"random data, {args.size_mib} MiB per row, 3 nodes, median of {args.rounds} "
        "round(s); limit = RF parallel files, fdatasync every 4 MiB"
    )
    print(f"{'':<6}{'clients':<11}{'limit':>11}{'fabric':>11}{'ratio':>8}")
    for (rf, label), pairs in results.items():
        limit = statistics.median(p[0] for p in pairs)
        ours = statistics.median(p[1] for p in pairs)
        ratio = statistics.median(p[1] / p[0] for p in pairs)
        print(f"RF{rf:<4}{label:<11}{limit:>6.0f} MB/s{ours:>6.0f} MB/s{ratio:>8.2f}")
    print("peak RSS per node: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()))


if __name__ == "__main__":
    main()
