"""Data-path benchmark: a mixed file through dedup + zstd containers, beside the disk.

    .venv/bin/python scripts/bench_datapath.py [--size-mib 1024]

On a local 3-node cluster, for RF2 and RF3 containers with dedup and zstd, one run
measures:
* the fabric: a sequential PUT of the file into a vdisk, then a GET of it back;
* the write baseline: what the fabric actually stored (its physical bytes, after holes,
  dedup and compression) written as RF files at once, one thread each, every 4 MiB
  fdatasync'ed. The ratio is baseline time / fabric time for the same stored bytes:
  1.0 means the fabric spent no time beyond writing what it keeps. (Comparing the
  fabric's logical rate with full copies would credit dedup and compression to speed;
  scripts/bench_write.py measures incompressible data against full copies.)
* the read baseline: the file read back from one plain file. Before every read,
  baseline and fabric alike, the page cache is dropped when the user may (root), so
  reads come from the disk; otherwise both are warm, and the header says which.
Rates are MB/s (10^6 bytes a second) of the file's logical bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.benchkit import (
    MiB,
    cluster_root,
    disk_read_limit,
    disk_write_limit,
    drop_caches,
    local_cluster,
    make_mixed,
    node_pids,
    peak_rss_mib,
    rate,
)
from shell.client import FabricClient

__all__ = ["make_mixed", "peak_rss_mib"]  # older scripts import these from here


class Sink:
    def write(self, b: bytes) -> None:
        pass


async def through_fabric(urls: list[str], src: Path, rf: int) -> dict[str, Any]:
    size = src.stat().st_size
    name = f"rf{rf}"
    async with FabricClient(urls, timeout_s=3600) as client:
        await client.create_container(name, rf=rf, dedup=True, compression="zstd")
        await client.create_vdisk(name, name, size)
        t0 = time.perf_counter()
        await client.write_vdisk(name, str(src))
        write_s = time.perf_counter() - t0
        drop_caches()
        t0 = time.perf_counter()
        n = await client.read_vdisk(name, Sink(), 0, size)  # type: ignore[arg-type]
        read_s = time.perf_counter() - t0
        assert n == size
        c = await client.container(name)
    return {
        "write_s": write_s,
        "write": rate(size, write_s),
        "read": rate(size, read_s),
        "dedup": c["dedup_ratio"],
        "compression": c["compression_ratio"],
        "physical": int(c["physical_bytes"]),
    }


def stored_baseline_s(physical: int, rf: int, tmp: Path) -> float:
    """Seconds to write ``physical`` bytes as ``rf`` fsynced parallel files."""
    per_copy = tmp / "stored.bin"
    with open(per_copy, "wb") as f:
        left = physical // rf
        while left > 0:
            f.write(os.urandom(min(left, 4 * MiB)))
            left -= 4 * MiB
    mbs = disk_write_limit(per_copy, rf, tmp)
    seconds = per_copy.stat().st_size / 1e6 / mbs
    per_copy.unlink()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp_s:
        tmp = Path(tmp_s)
        src = tmp / "mixed.img"
        make_mixed(src, args.size_mib * MiB)
        with local_cluster(tmp, 3) as cfg:
            urls = [n.url for n in cfg.nodes]
            for rf in (2, 3):
                ours = asyncio.run(through_fabric(urls, src, rf))
                base_s = stored_baseline_s(ours["physical"], rf, tmp)
                base_r = disk_read_limit([src])
                rows.append((rf, base_s, base_r, ours))
            rss = {n: peak_rss_mib(pid) for n, pid in node_pids(cluster_root(tmp, 3)).items()}
    cold = drop_caches()
    print(
        f"mixed file: {args.size_mib} MiB (1/4 zeros, 1/4 one repeated MiB, 1/4 text, "
        "1/4 random), 3 nodes, dedup + zstd; reads "
        + ("cold (page cache dropped before each)" if cold else "warm (cannot drop caches)")
    )
    print(
        f"{'':<6}{'fabric write':>14}{'stored':>11}{'baseline s':>12}{'fabric s':>10}"
        f"{'ratio':>7}{'baseline read':>15}{'fabric read':>13}{'ratio':>7}{'dedup':>7}"
        f"{'zstd':>6}"
    )
    for rf, base_s, base_r, o in rows:
        print(
            f"RF{rf:<4}{o['write']:>9.0f} MB/s{o['physical'] / MiB:>7.0f} MiB"
            f"{base_s:>12.2f}{o['write_s']:>10.2f}{base_s / o['write_s']:>7.2f}"
            f"{base_r:>10.0f} MB/s{o['read']:>8.0f} MB/s{o['read'] / base_r:>7.2f}"
            f"{o['dedup']:>7.2f}{o['compression']:>6.2f}"
        )
    print("peak RSS per node: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()))


if __name__ == "__main__":
    main()
