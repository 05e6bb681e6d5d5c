"""Metadata benchmark: Raft commit throughput, leader failover, and `fabric up` time.

    .venv/bin/python scripts/bench_raft.py [--seconds 5] [--rounds 10]

Every figure comes with the baseline measured in the same run, so the ratio is what
matters:
* commit throughput on loopback (3 voters, fsync on every node) beside the machine's
  own limit of small fsynced appends to one file, which a Raft without batching could
  not exceed;
* the same cluster code on the simulated network (no sockets, no fsync), so the
  difference is what sockets and disks cost, and the simulated figure is the protocol;
* failover: kill -9 of the leader to the first commit under the new one, beside the
  configured election timeout;
* `fabric up` of 5 nodes until healthy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabric.config import ClusterConfig, load_config
from fabric.errors import FabricError
from fabric.metadata.commands import Put
from nodes.simcluster import SimCluster
from scripts.benchkit import write_config
from shell import launcher
from shell.client import ApiError, FabricClient, Unreachable


def fsync_appends_per_s(directory: str, seconds: float = 2.0) -> float:
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        os.write(fd, b"x" * 64)
        os.fdatasync(fd)
        n += 1
    os.close(fd)
    os.unlink(path)
    return n / (time.perf_counter() - start)


async def loopback_commits(cfg: ClusterConfig, seconds: float, concurrency: int) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(client: FabricClient, w: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop:
            await client.kv_put(f"bench/{w}/{i % 100}", i)
            done += 1
            i += 1

    async with FabricClient([n.url for n in cfg.nodes]) as client:
        leader = (await client.cluster())["leader"]
        urls = [cfg.node(leader).url]
    async with FabricClient(urls) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client, w) for w in range(concurrency)))
        return done / (time.perf_counter() - start)


def simulated_commits(cfg: ClusterConfig, commands: int, concurrency: int) -> float:
    # No checkers: this times the protocol (the tests run them on every simulation).
    with SimCluster(cfg, seed=1, checks=False) as sim:
        sim.run(sim.start_all())
        sim.run(sim.wait_for(lambda: sim.leader() is not None, 10, "leader"))
        leader = sim.nodes[sim.leader() or ""]

        async def worker(w: int) -> None:
            for i in range(commands // concurrency):
                await leader.metadata.propose(Put(f"kv/bench/{w}/{i % 100}", i))

        async def run() -> None:
            await asyncio.gather(*(worker(w) for w in range(concurrency)))

        start = time.perf_counter()
        sim.run(run())
        return commands / (time.perf_counter() - start)


async def first_commit_after(cfg: ClusterConfig, killed: str, t0: float) -> float:
    urls = [n.url for n in cfg.nodes if n.id != killed]
    async with FabricClient(urls, timeout_s=1.0) as client:
        while True:
            try:
                await client.kv_put("failover", t0)
                return time.perf_counter() - t0
            except (ApiError, Unreachable, FabricError, TimeoutError):
                await asyncio.sleep(0.005)


def failover_times(root: str, cfg: ClusterConfig, rounds: int) -> list[float]:
    times = []
    cdir = launcher.ClusterDir(root)
    for _ in range(rounds):
        view = launcher.status(root)
        leader = view["leader"]
        pid = cdir.pid(leader)
        assert pid is not None
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        times.append(asyncio.run(first_commit_after(cfg, leader, t0)))
        launcher.up(root, None, None, say=lambda _: None)  # bring the killed node back
    return times


def up_times(base: Path, rounds: int) -> list[float]:
    times = []
    for r in range(rounds):
        root = str(base / f"up{r}")
        cfg_path = write_config(base / f"up{r}.toml", 5)
        t0 = time.perf_counter()
        launcher.up(root, str(cfg_path), None, say=lambda _: None)
        times.append(time.perf_counter() - t0)
        launcher.down(root, say=lambda _: None)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp:
        base = Path(tmp)
        root = str(base / "c3")
        cfg = load_config(str(write_config(base / "c3.toml", 3)))
        launcher.up(root, str(base / "c3.toml"), None, say=lambda _: None)
        try:
            fsyncs = fsync_appends_per_s(tmp)
            loop_rate = asyncio.run(loopback_commits(cfg, args.seconds, args.concurrency))
            sim_rate = simulated_commits(cfg, 20_000, args.concurrency)
            fail = failover_times(root, cfg, args.rounds)
        finally:
            launcher.down(root, say=lambda _: None)
        ups = up_times(base, max(1, args.rounds // 2))
    t = cfg.timeouts
    election = f"{t.election_ticks * t.tick_ms}-{2 * t.election_ticks * t.tick_ms} ms"
    rows = [
        ("fsynced 64 B appends, one file (baseline)", f"{fsyncs:,.0f} /s", "1.00"),
        (
            "Raft commits, 3 voters, loopback HTTP + fsync",
            f"{loop_rate:,.0f} /s",
            f"{loop_rate / fsyncs:.2f}",
        ),
        (
            "Raft commits, same nodes, simulated network",
            f"{sim_rate:,.0f} /s",
            f"{sim_rate / fsyncs:.2f}",
        ),
        (
            f"failover kill -9 -> first commit (median of {len(fail)})",
            f"{statistics.median(fail) * 1000:,.0f} ms",
            f"election timeout {election}",
        ),
        (
            f"fabric up, 5 nodes, until healthy (median of {len(ups)})",
            f"{statistics.median(ups):.2f} s",
            "",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>14}  ratio to baseline")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>14}  {ratio}")


if __name__ == "__main__":
    main()
