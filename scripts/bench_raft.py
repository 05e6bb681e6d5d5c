"""Metadata benchmark: Raft commit throughput, leader failover, and `fabric up` time.

    .venv/bin/python scripts/bench_raft.py [--seconds 5] [--rounds 10] [--proposers 256]

Every figure comes with the baseline measured in the same run, so the ratio is what
matters:
* commit throughput on loopback, 3 voters, fsync on every node, beside the machine's own
  limit of small fsynced appends to one file (what a Raft without batching could not
  exceed). A command counts once its proposer got the applied result back, so it was
  fsynced by a majority of voters. Two ways in:
  - proposals made on the leader, as the node's own services make them (the write path,
    the scanner): the leader is a node built in this process on the real runtime
    (aiohttp between nodes, files with fsync), the other two voters are node processes.
    This is what Raft itself sustains;
  - kv PUTs through the HTTP API of a cluster of three node processes, one command per
    request, from a lean HTTP/1.1 load generator (keep-alive connections), so that the
    client's own CPU does not crowd the two cores it is measuring. The difference to the
    first row is what the API path costs per command;
* the same cluster code on the simulated network (no sockets, no fsync), so the
  difference is what sockets and disks cost, and the simulated figure is the protocol;
* failover: kill -9 of the leader to the first commit under the new one, beside the
  configured election timeout;
* `fabric up` of 5 nodes until healthy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
from aiohttp import web

from fabric.config import ClusterConfig, load_config, render_config
from fabric.errors import FabricError
from fabric.keys import ClusterKeys
from fabric.metadata.commands import Put
from fabric.ports import Runtime
from nodes import secretfile
from nodes.api import build_app
from nodes.main import disk_root
from nodes.node import Node
from nodes.runtime import FileDisk, HttpFetcher, HttpTransport, RealClock, thread_offload
from nodes.services.images import FileSpill
from nodes.simcluster import SimCluster
from scripts.benchkit import use_token, write_config
from shell import launcher
from shell.client import ApiError, FabricClient, Unreachable

WARMUP_S = 1.0
"""Load before the clock starts: connections open, batches at their steady size."""
FOLLOWER_ELECTION_FACTOR = 4
"""The two voter processes wait this many times longer before they campaign, so the node
in this process, which starts first, is elected (the proposers must sit beside the leader)."""
STOP_TIMEOUT_S = 10.0


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


# --- proposals on the leader ---------------------------------------------------------------
class LocalNode:
    """A node of ``config`` built in this process on the real runtime (as ``fabric node
    run`` builds it), serving the internal routes its peers need."""

    def __init__(
        self, config: ClusterConfig, node_id: str, node_dir: str, keys: ClusterKeys
    ) -> None:
        nc = config.node(node_id)
        self.transport = HttpTransport(node_id, config, keys)
        self.disks = [FileDisk(d, disk_root(node_dir, d)) for d in nc.disks]
        self.fetcher = HttpFetcher()
        runtime = Runtime(
            clock=RealClock(),
            rng=random.Random(),
            transport=self.transport,
            disks=list(self.disks),
            offload=thread_offload,
            fetcher=self.fetcher,
            spill_factory=lambda: FileSpill(os.path.join(node_dir, "spill")),
            keys=keys,
        )
        self.node = Node(config, node_id, runtime)
        self.url = nc.url
        self._runner = web.AppRunner(
            build_app(self.node, self.transport.routes()), access_log=None, handle_signals=False
        )

    async def start(self) -> None:
        await self._runner.setup()
        host, port = urlsplit(self.url).hostname, urlsplit(self.url).port
        await web.TCPSite(self._runner, host, port).start()
        await self.node.start()

    async def stop(self) -> None:
        await self.node.stop()
        await self.transport.close()
        await self.fetcher.close()
        await self._runner.cleanup()
        for disk in self.disks:
            disk.close()


def spawn_voter(config_path: Path, node_id: str, node_dir: Path) -> subprocess.Popen[bytes]:
    node_dir.mkdir(parents=True, exist_ok=True)
    with open(node_dir / "node.log", "ab") as log:
        args = ["--config", str(config_path), "--id", node_id, "--dir", str(node_dir)]
        return subprocess.Popen(
            [sys.executable, "-m", "shell.cli", "node", "run", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def stop_voters(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def run_proposers(node: Node, seconds: float, proposers: int) -> int:
    """Commands committed by ``proposers`` concurrent proposers in ``seconds``."""
    done = 0
    stop = time.perf_counter() + seconds

    async def proposer(p: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop:
            result = await node.metadata.propose(Put(f"kv/bench/{p}/{i % 100}", i))
            assert result.ok, result
            done += 1
            i += 1

    await asyncio.gather(*(proposer(p) for p in range(proposers)))
    return done


async def leader_commits(base: Path, seconds: float, proposers: int) -> tuple[float, float]:
    """Commits/s by proposers on the leader, and the mean entries per fsync of its WAL."""
    cfg = load_config(str(write_config(base / "raft.toml", 3)))
    cfg = replace(cfg, id="bench-raft")
    patient = cfg.timeouts.election_ticks * FOLLOWER_ELECTION_FACTOR
    slow = replace(cfg.timeouts, election_ticks=patient)
    followers_cfg = base / "raft-followers.toml"
    followers_cfg.write_text(render_config(replace(cfg, timeouts=slow)))
    me, others = cfg.nodes[0].id, [n.id for n in cfg.nodes[1:]]
    secret = str(base / secretfile.SECRET_NAME)  # beside both configs, for every voter
    secretfile.create(secret)
    local = LocalNode(cfg, me, str(base / "raft" / me), secretfile.load(secret))
    await local.start()
    procs = [spawn_voter(followers_cfg, n, base / "raft" / n) for n in others]
    try:
        metadata = local.node.metadata
        deadline = time.perf_counter() + 30
        while not metadata.is_leader:
            if metadata.leader is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"the local node did not become leader ({metadata.leader})")
            await asyncio.sleep(0.02)
        await run_proposers(local.node, WARMUP_S, proposers)
        syncs, entries = metadata.wal_syncs, metadata.wal_entries
        start = time.perf_counter()
        done = await run_proposers(local.node, seconds, proposers)
        rate = done / (time.perf_counter() - start)
        batch = (metadata.wal_entries - entries) / max(1, metadata.wal_syncs - syncs)
        return rate, batch
    finally:
        stop_voters(procs)
        await local.stop()


# --- kv PUTs through the HTTP API ----------------------------------------------------------
async def put_loop(url: str, stop: float, client: int) -> int:
    """PUT one key after another on one keep-alive connection until ``stop``; every answer
    must be a 200 with the new version."""
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 80
    reader, writer = await asyncio.open_connection(host, port)
    done = 0
    try:
        while time.perf_counter() < stop:
            body = b'{"value": %d}' % done
            writer.write(
                b"PUT /api/v1/kv/bench/%d/%d HTTP/1.1\r\nHost: %s:%d\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (client, done % 100, host.encode(), port, len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            answer = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200") or "version" not in json.loads(answer):
                raise RuntimeError(f"PUT failed: {head.splitlines()[0]!r} {answer[:200]!r}")
            done += 1
    finally:
        writer.close()
    return done


async def api_commits(cfg: ClusterConfig, seconds: float, clients: int) -> float:
    async with FabricClient([n.url for n in cfg.nodes]) as client:
        url = cfg.node((await client.cluster())["leader"]).url
    warm = time.perf_counter() + WARMUP_S
    await asyncio.gather(*(put_loop(url, warm, c) for c in range(clients)))
    start = time.perf_counter()
    counts = await asyncio.gather(*(put_loop(url, start + seconds, c) for c in range(clients)))
    return sum(counts) / (time.perf_counter() - start)


# --- the simulator, failover, start-up -----------------------------------------------------
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
    ap.add_argument(
        "--proposers", type=int, default=256, help="concurrent proposers, and API connections"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp:
        base = Path(tmp)
        fsyncs = fsync_appends_per_s(tmp)
        # uvloop, as the node processes run: the leader here must cost what theirs does.
        local_rate, batch = uvloop.run(leader_commits(base, args.seconds, args.proposers))
        root = str(base / "c3")
        cfg = load_config(str(write_config(base / "c3.toml", 3)))
        launcher.up(root, str(base / "c3.toml"), None, say=lambda _: None)
        use_token(root)
        try:
            api_rate = uvloop.run(api_commits(cfg, args.seconds, args.proposers))
            sim_rate = simulated_commits(cfg, 20_000, 64)
            fail = failover_times(root, cfg, args.rounds)
        finally:
            launcher.down(root, say=lambda _: None)
        ups = up_times(base, max(1, args.rounds // 2))
    t = cfg.timeouts
    election = f"{t.election_ticks * t.tick_ms}-{2 * t.election_ticks * t.tick_ms} ms"
    n = args.proposers
    rows = [
        ("fsynced 64 B appends, one file (baseline)", f"{fsyncs:,.0f} /s", "1.00"),
        (
            f"Raft commits, 3 voters, loopback + fsync, {n} proposers on the leader",
            f"{local_rate:,.0f} /s",
            f"{local_rate / fsyncs:.2f}  ({batch:.0f} entries per leader fsync)",
        ),
        (
            f"kv PUTs via the HTTP API, same cluster shape, {n} connections",
            f"{api_rate:,.0f} /s",
            f"{api_rate / fsyncs:.2f}",
        ),
        (
            "Raft commits, same nodes, simulated network (64 proposers)",
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
