"""Data-path benchmark: write and read a mixed file through the API, beside the machine.

    .venv/bin/python scripts/bench_datapath.py [--size-mib 1024]

In one run, on a local 3-node cluster (dedup + zstd containers):
* baseline: the same bytes written to RF files in parallel threads with fsync, then read
  back (the machine's own limit for RF copies). Before every read, baseline and fabric
  alike, the page cache is dropped when the user may (root), so reads come from the disk;
  otherwise both are warm, and the header says which;
* RF2 and RF3: sequential write of the file into a vdisk, then a read of it back.
The table gives MB/s, the ratio to the baseline, the dedup and compression ratios, and
the peak RSS (VmHWM) of each node.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabric.config import load_config
from scripts.benchkit import write_config
from shell import launcher
from shell.client import FabricClient

MiB = 1 << 20


def make_mixed(path: Path, size: int) -> None:
    """Quarter each: zeros, one repeated random MiB, compressible text, random."""
    rng = random.Random(7)
    dup = rng.randbytes(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            kind = i % 4
            if kind == 2:  # text that differs per extent: it compresses but does not dedup
                lines = (
                    b"%010d the quick brown fox jumps over the lazy dog\n" % (i * 99_991 + n)
                    for n in range(MiB // 50 + 1)
                )
                f.write(b"".join(lines)[:MiB])
            else:
                f.write(bytes(MiB) if kind == 0 else dup if kind == 1 else rng.randbytes(MiB))


def drop_caches() -> bool:
    """Empty the page cache (root only), so reads come from the disk: the honest limit."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def baseline(src: Path, copies: int, tmp: Path) -> tuple[float, float]:
    """MB/s writing ``copies`` files in parallel with fsync, and reading them back."""
    size = src.stat().st_size

    def write(i: int) -> None:
        with open(src, "rb") as f, open(tmp / f"copy{i}", "wb") as out:
            while chunk := f.read(4 * MiB):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())

    def read(i: int) -> None:
        with open(tmp / f"copy{i}", "rb") as f:
            while f.read(4 * MiB):
                pass

    rates = []
    for fn in (write, read):
        threads = [threading.Thread(target=fn, args=(i,)) for i in range(copies)]
        if fn is read:
            drop_caches()
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rates.append(size / MiB / (time.perf_counter() - t0))
    for i in range(copies):
        (tmp / f"copy{i}").unlink()
    return rates[0], rates[1]


async def through_fabric(urls: list[str], src: Path, rf: int) -> dict[str, float]:
    size = src.stat().st_size
    name = f"rf{rf}"
    async with FabricClient(urls, timeout_s=3600) as client:
        await client.create_container(name, rf=rf, dedup=True, compression="zstd")
        await client.create_vdisk(name, name, size)
        t0 = time.perf_counter()
        await client.write_vdisk(name, str(src))
        write_s = time.perf_counter() - t0

        class Sink:
            def write(self, b: bytes) -> None:
                pass

        drop_caches()
        t0 = time.perf_counter()
        n = await client.read_vdisk(name, Sink(), 0, size)  # type: ignore[arg-type]
        read_s = time.perf_counter() - t0
        assert n == size
        c = await client.container(name)
    return {
        "write": size / MiB / write_s,
        "read": size / MiB / read_s,
        "dedup": c["dedup_ratio"],
        "compression": c["compression_ratio"],
        "physical_mib": c["physical_bytes"] / MiB,
    }


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp_s:
        tmp = Path(tmp_s)
        src = tmp / "mixed.img"
        make_mixed(src, args.size_mib * MiB)
        cfg_path = write_config(tmp / "c3.toml", 3)
        root = str(tmp / "c3")
        launcher.up(root, str(cfg_path), None, say=lambda _: None)
        urls = [n.url for n in load_config(str(cfg_path)).nodes]
        rows = []
        try:
            for rf in (2, 3):
                base_w, base_r = baseline(src, rf, tmp)
                ours = asyncio.run(through_fabric(urls, src, rf))
                rows.append((rf, base_w, base_r, ours))
            cdir = launcher.ClusterDir(root)
            rss = {
                n.id: peak_rss_mib(cdir.pid(n.id) or 0)
                for n in load_config(root + "/cluster.toml").nodes
            }
        finally:
            launcher.down(root, say=lambda _: None)
    cold = drop_caches()
    print(
        f"mixed file: {args.size_mib} MiB (1/4 zeros, 1/4 one repeated MiB, 1/4 text, "
        "1/4 random), 3 nodes, dedup + zstd; reads "
        + ("cold (page cache dropped before each)" if cold else "warm (cannot drop caches)")
    )
    print(
        f"{'':<6}{'baseline write':>15}{'fabric write':>14}{'ratio':>7}"
        f"{'baseline read':>15}{'fabric read':>13}{'ratio':>7}{'dedup':>7}{'zstd':>7}"
        f"{'physical':>11}"
    )
    for rf, bw, br, o in rows:
        print(
            f"RF{rf:<4}{bw:>11.0f} MB/s{o['write']:>9.0f} MB/s{o['write'] / bw:>7.2f}"
            f"{br:>11.0f} MB/s{o['read']:>8.0f} MB/s{o['read'] / br:>7.2f}"
            f"{o['dedup']:>7.2f}{o['compression']:>7.2f}{o['physical_mib']:>7.0f} MiB"
        )
    print("peak RSS per node: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()))


if __name__ == "__main__":
    main()
