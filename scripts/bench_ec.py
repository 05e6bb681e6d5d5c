"""Erasure-coding benchmark: pyeclib alone (the limit) beside the fabric's EC work.

    .venv/bin/python scripts/bench_ec.py [--size-mib 256]

In one run, for 4+2 and 2+1:
* the library alone: pyeclib encode of k x 1 MiB chunks, and reconstruction of one
  fragment from k others, in MB/s of data;
* the fabric on a local 7-node cluster (5 voters): EC conversion throughput (data bytes
  converted per second, from the end of the write until no group is left replicated),
  and degraded-read throughput (the whole vdisk read after killing a node that holds
  data groups);
and the ratios of the fabric to the library.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabric.config import load_config
from fabric.extents import erasure
from scripts.benchkit import write_config
from shell import launcher
from shell.client import FabricClient

MiB = 1 << 20


def library(k: int, m: int, rounds: int = 40) -> tuple[float, float]:
    lay = erasure.layout(k, m, MiB)
    chunks = [random.Random(i).randbytes(MiB) for i in range(k)]
    t0 = time.perf_counter()
    for _ in range(rounds):
        parity = erasure.encode(lay, chunks)
    enc = rounds * k / (time.perf_counter() - t0)
    data = {i: chunks[i] for i in range(1, k)}
    t0 = time.perf_counter()
    for _ in range(rounds):
        erasure.rebuild(lay, data, {0: parity[0]}, 0)
    dec = rounds / (time.perf_counter() - t0)  # one data chunk (MiB) rebuilt per round
    return enc, dec


class Sink:
    def write(self, b: bytes) -> None:
        pass


async def fabric_ec(urls: list[str], root: str, name: str, ec: str, src: Path) -> dict[str, Any]:
    size = src.stat().st_size
    async with FabricClient(urls, timeout_s=3600) as client:
        await client.create_container(name, rf=2, ec=ec, ec_delay_s=0)
        await client.create_vdisk(name, name, size)
        await client.write_vdisk(name, str(src))
        t0 = time.perf_counter()
        while True:
            c = await client.container(name)
            if c["ec_pending_groups"] == 0 and c["ec_strips"]:
                break
            await asyncio.sleep(0.1)
        convert_s = time.perf_counter() - t0
        strip_nodes = [n for n in (await client.cluster())["nodes"]]
    # Kill a node that holds data groups of this container (not the leader).
    view = await _cluster(urls)
    leader = view["leader"]
    cdir = launcher.ClusterDir(root)
    victim = next(n["id"] for n in strip_nodes if n["id"] != leader)
    pid = cdir.pid(victim)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    alive = [u for u, n in zip(urls, strip_nodes, strict=True) if n["id"] != victim]
    async with FabricClient(alive, timeout_s=3600) as client:
        t0 = time.perf_counter()
        n = await client.read_vdisk(name, Sink(), 0, size)  # type: ignore[arg-type]
        degraded_s = time.perf_counter() - t0
        assert n == size
        c = await client.container(name)
    return {
        "convert": c["ec_data_bytes"] / MiB / convert_s,
        "degraded": size / MiB / degraded_s,
        "overhead": c["physical_bytes"] / max(1, c["stored_bytes"]),
    }


async def _cluster(urls: list[str]) -> dict[str, Any]:
    async with FabricClient(urls) as client:
        return await client.cluster()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp_s:
        tmp = Path(tmp_s)
        src = tmp / "random.img"
        rng = random.Random(3)
        with open(src, "wb") as f:
            for _ in range(args.size_mib):
                f.write(rng.randbytes(MiB))
        cfg_path = write_config(tmp / "c7.toml", 7, voters=5)
        root = str(tmp / "c7")
        launcher.up(root, str(cfg_path), None, say=lambda _: None)
        urls = [n.url for n in load_config(str(cfg_path)).nodes]
        try:
            for k, m in ((4, 2), (2, 1)):
                enc, dec = library(k, m)
                ours = asyncio.run(fabric_ec(urls, root, f"ec{k}{m}", f"{k}+{m}", src))
                launcher.up(root, None, None, say=lambda _: None)  # bring the victim back
                rows.append((f"{k}+{m}", enc, dec, ours))
        finally:
            launcher.down(root, say=lambda _: None)
    print(
        f"random data {args.size_mib} MiB per policy, 7 nodes, RF2 then EC; backend "
        f"{erasure.backend()}"
    )
    print(
        f"{'ec':<5}{'pyeclib encode':>16}{'fabric convert':>16}{'ratio':>7}"
        f"{'pyeclib rebuild':>17}{'degraded read':>15}{'ratio':>7}{'physical/stored':>17}"
    )
    for name, enc, dec, o in rows:
        print(
            f"{name:<5}{enc:>11.0f} MB/s{o['convert']:>11.0f} MB/s{o['convert'] / enc:>7.3f}"
            f"{dec:>12.0f} MB/s{o['degraded']:>10.0f} MB/s{o['degraded'] / dec:>7.3f}"
            f"{o['overhead']:>17.2f}"
        )


if __name__ == "__main__":
    main()
