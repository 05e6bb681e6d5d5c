"""Erasure-coding benchmark: pyeclib alone (the limit) beside the fabric's EC work, in one run.

    .venv/bin/python scripts/bench_ec.py [--size-mib 256] [--policies 4+2,2+1] [--rounds 1]

Per policy, on a local 7-node cluster (5 voters), with random data (no dedup or
compression gain possible), rates in MB/s (10^6 bytes a second):

* **pyeclib alone**, in this process, warmed up and then timed in five runs of at least
  0.25 s each (the median is shown): encode of ``k`` x 1 MiB (MB/s of data encoded), and
  reconstruction of one 1 MiB data fragment from ``k`` others (MB/s of data rebuilt).
  These are the fabric's own calls (``fabric.extents.erasure``'s driver, chunk size and
  fragment layout), without the fabric around them.
* **write**: the file PUT into a plain RF2 container, then into an RF2 container with
  EC and ``ec_delay_s = 0``, so conversion runs on the leader while the write goes on.
  The ratio is EC / RF2 (the price the write pays for conversion beside it).
* **conversion**: data bytes converted over the seconds the EC job was converting (the
  nodes' ``fabric_ec_converted_bytes`` and ``fabric_ec_convert_seconds`` counters: time
  spent inside conversions, not the time the scanner slept between passes or waited for
  groups to cool). The ratio to pyeclib encode is taken with this rate. Beside it, for
  reference, the wall-clock rate: the same bytes over the time from the start of the
  write until no group of the container is left replicated (bounded by the write rate;
  a tail packed at the end first waits ``limits.EC_TAIL_QUIET_S``).
* **read**: the whole vdisk read once with every node up, then again after killing the
  node (not the leader) that holds the most data groups, so the extents on it are
  rebuilt from their strips. The degraded-read ratio is that rate over pyeclib rebuild;
  beside it, over the healthy read (a whole-vdisk read cannot beat that one).
* **physical/stored** after conversion (ideal: (k+m)/k), and every node's peak RSS.

With ``--rounds N`` every measurement is repeated N times (fresh vdisks, the killed
node brought back in between) and each column shows the median over the rounds: for
the ratio columns, the median of each round's ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabric import limits
from fabric.extents import erasure
from scripts.benchkit import (
    cluster_root,
    local_cluster,
    node_pids,
    peak_rss_mib,
    random_file,
    rate,
)
from shell import launcher
from shell.client import FabricClient

WARMUP_S = 0.5
RUN_S = 0.25
RUNS = 5


def timed(call: Callable[[], Any], nbytes: int) -> float:
    """MB/s of ``call`` (which handles ``nbytes`` per call): warmed, median of RUNS runs
    of at least RUN_S seconds each."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < WARMUP_S:
        call()
    rates = []
    for _ in range(RUNS):
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < RUN_S:
            call()
            n += 1
        rates.append(rate(n * nbytes, elapsed))
    return statistics.median(rates)


def library(k: int, m: int) -> tuple[float, float]:
    """(encode, rebuild) MB/s of pyeclib alone for the fabric's chunk layout."""
    chunk = limits.EC_CHUNK_BYTES
    driver = erasure._driver(k, m)
    data = random.Random(k * 10 + m).randbytes(k * chunk)
    frags = driver.encode(data)
    survivors = frags[1 : k + 1]  # k - 1 data fragments and one parity fragment
    assert driver.reconstruct(survivors, [0])[0] == frags[0]
    encode = timed(lambda: driver.encode(data), k * chunk)
    rebuild = timed(lambda: driver.reconstruct(survivors, [0]), chunk)
    return encode, rebuild


class Sink:
    def write(self, b: bytes) -> None:
        pass


async def counters(urls: list[str], names: tuple[str, ...]) -> dict[str, float]:
    """The sum over every node that answers of each named Prometheus counter."""
    totals = dict.fromkeys(names, 0.0)
    auth = {"Authorization": f"Bearer {os.environ.get('FABRIC_TOKEN', '')}"}
    async with aiohttp.ClientSession(headers=auth) as session:
        for url in urls:
            try:
                async with session.get(url + "/metrics") as resp:
                    text = await resp.text()
            except aiohttp.ClientError:
                continue
            for line in text.splitlines():
                name = line.split("{", 1)[0].split(" ", 1)[0].removesuffix("_total")
                if name in totals and not line.startswith("#"):
                    totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


EC_COUNTERS = ("fabric_ec_converted_bytes", "fabric_ec_convert_seconds")


@dataclass
class Row:
    policy: str
    encode: float
    rebuild: float
    rf2_write: float = 0.0
    ec_write: float = 0.0
    convert_busy: float = 0.0
    convert_wall: float = 0.0
    read: float = 0.0
    degraded: float = 0.0
    overhead: float = 0.0


async def put(urls: list[str], container: str, name: str, src: Path) -> float:
    size = src.stat().st_size
    async with FabricClient(urls, timeout_s=3600) as client:
        await client.create_vdisk(name, container, size)
        t0 = time.perf_counter()
        await client.write_vdisk(name, str(src))
        return time.perf_counter() - t0


async def read_rate(urls: list[str], name: str, size: int) -> float:
    async with FabricClient(urls, timeout_s=3600) as client:
        t0 = time.perf_counter()
        n = await client.read_vdisk(name, Sink(), 0, size)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
    assert n == size, f"read {n} of {size} bytes"
    return rate(size, seconds)


def data_holder(root: str, candidates: list[str]) -> str:
    """The candidate whose disks hold the most bytes of data-group files (not parity)."""

    def held(node: str) -> int:
        total = 0
        for dirpath, _, files in os.walk(launcher.ClusterDir(root).node_dir(node)):
            for f in files:
                if f.endswith(".eg") and "-p" not in f:
                    total += os.path.getsize(os.path.join(dirpath, f))
        return total

    return max(candidates, key=held)


async def fabric_ec(
    urls: list[str],
    ids: list[str],
    root: str,
    row: Row,
    k: int,
    m: int,
    src: Path,
    tag: str,
    rss: dict[str, float],
) -> None:
    size = src.stat().st_size
    async with FabricClient(urls, timeout_s=3600) as client:
        await client.create_container(f"rf2-{tag}", rf=2)
        await client.create_container(f"ec-{tag}", rf=2, ec=f"{k}+{m}", ec_delay_s=0)
    row.rf2_write = rate(size, await put(urls, f"rf2-{tag}", f"rf2-{tag}", src))
    async with FabricClient(urls) as client:
        await client.delete_vdisk(f"rf2-{tag}")
    before = await counters(urls, EC_COUNTERS)
    t0 = time.perf_counter()
    row.ec_write = rate(size, await put(urls, f"ec-{tag}", f"ec-{tag}", src))
    async with FabricClient(urls, timeout_s=3600) as client:
        while True:
            c = await client.container(f"ec-{tag}")
            if c["ec_pending_groups"] == 0 and c["ec_strips"]:
                break
            await asyncio.sleep(0.05)
        wall_s = time.perf_counter() - t0
        leader = (await client.cluster())["leader"]
    after = await counters(urls, EC_COUNTERS)
    converted = after["fabric_ec_converted_bytes"] - before["fabric_ec_converted_bytes"]
    busy_s = after["fabric_ec_convert_seconds"] - before["fabric_ec_convert_seconds"]
    row.convert_busy = rate(int(converted), busy_s) if busy_s > 0 else float("nan")
    row.convert_wall = rate(c["ec_data_bytes"], wall_s)
    row.overhead = c["physical_bytes"] / max(1, c["stored_bytes"])
    row.read = await read_rate(urls, f"ec-{tag}", size)
    victim = data_holder(root, [n for n in ids if n != leader])
    for node, pid in node_pids(root).items():
        rss[node] = max(rss.get(node, 0.0), peak_rss_mib(pid))
    victim_pid = launcher.ClusterDir(root).pid(victim)
    assert victim_pid is not None
    os.kill(victim_pid, signal.SIGKILL)
    alive = [u for u, n in zip(urls, ids, strict=True) if n != victim]
    row.degraded = await read_rate(alive, f"ec-{tag}", size)
    for node, pid in node_pids(root).items():
        rss[node] = max(rss.get(node, 0.0), peak_rss_mib(pid))
    async with FabricClient(alive) as client:
        await client.delete_vdisk(f"ec-{tag}")  # the next round starts from empty disks


def _col(head: str, sub: str, get: Callable[[Row], float], ratio: bool = False) -> Any:
    width = 10
    fmt = f">{width}.2f" if ratio else f">{width}.0f"
    return (head, sub, width, lambda rs: format(statistics.median(map(get, rs)), fmt))


COLUMNS = [
    ("", "ec", 5, None),
    _col("pyeclib", "encode", lambda r: r.encode),
    _col("RF2", "write", lambda r: r.rf2_write),
    _col("EC", "write", lambda r: r.ec_write),
    _col("EC/RF2", "write", lambda r: r.ec_write / r.rf2_write, ratio=True),
    _col("convert", "busy", lambda r: r.convert_busy),
    _col("convert", "wall", lambda r: r.convert_wall),
    _col("busy/", "encode", lambda r: r.convert_busy / r.encode, ratio=True),
    _col("pyeclib", "rebuild", lambda r: r.rebuild),
    _col("read", "healthy", lambda r: r.read),
    _col("read", "degraded", lambda r: r.degraded),
    _col("degraded/", "rebuild", lambda r: r.degraded / r.rebuild, ratio=True),
    _col("degraded/", "healthy", lambda r: r.degraded / r.read, ratio=True),
    _col("physical/", "stored", lambda r: r.overhead, ratio=True),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--policies", default="4+2,2+1")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    policies = [tuple(int(x) for x in p.split("+")) for p in args.policies.split(",")]
    rows: dict[str, list[Row]] = {f"{k}+{m}": [] for k, m in policies}
    rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp_s:
        tmp = Path(tmp_s)
        src = random_file(tmp / "random.img", args.size_mib)
        with local_cluster(tmp, 7, voters=5) as cfg:
            urls = [n.url for n in cfg.nodes]
            ids = [n.id for n in cfg.nodes]
            root = cluster_root(tmp, 7)
            for r in range(args.rounds):
                for k, m in policies:
                    row = Row(f"{k}+{m}", *library(k, m))
                    asyncio.run(fabric_ec(urls, ids, root, row, k, m, src, f"{k}{m}r{r}", rss))
                    launcher.up(root, None, None, say=lambda _: None)  # the victim is back
                    rows[row.policy].append(row)
    print(
        f"random data, {args.size_mib} MiB per policy, 7 nodes, RF2 landing; backend "
        f"{erasure.backend()}; rates in MB/s (10^6 B/s); median of {args.rounds} round(s)"
    )
    print("".join(f"{a:>{w}}" for a, _, w, _ in COLUMNS))
    print("".join(f"{b:>{w}}" for _, b, w, _ in COLUMNS))
    for policy, rounds in rows.items():
        print(f"{policy:>{COLUMNS[0][2]}}" + "".join(cell(rounds) for *_, cell in COLUMNS[1:]))
    print(
        "targets: EC write >= 0.8x RF2 write; convert (busy) >= 0.3x pyeclib encode; "
        "degraded read >= 0.3x pyeclib rebuild"
    )
    print("peak RSS per node: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()))


if __name__ == "__main__":
    main()
