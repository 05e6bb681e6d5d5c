"""Rebuild benchmark: re-replication after a kill -9, beside the machine's own copy limit.

    .venv/bin/python scripts/bench_rebuild.py [--size-mib 256 1024] [--nodes 5 9] [--rounds 3]
                                              [--per-node N]

Each row starts a fresh local cluster of N nodes, creates an RF2 container and writes
SIZE MiB of random data into one vdisk, N clients at once, client i through node i (as
VMs on different hosts would), so every node holds about 2/N of the copies. Then:
* the rebuild delay goes to 0 and the rate limit off (``PUT /api/v1/rebuild``; with
  ``--per-node``, the copies a node takes part in at once too), and the page cache is
  dropped (when the benchmark may), so sources are read from disk;
* the node holding the most extent-group bytes, the leader excepted (a leader change
  would be measured too), is killed with SIGKILL;
* ``GET /api/v1/rebuild`` is polled, once the leader has marked the node DOWN, until
  every container has no byte at reduced resiliency and its resiliency is back to
  rf - 1, with the killed node still dead and still DOWN;
* the copy limit: the killed node's own extent-group files (the bytes that had to be
  rebuilt) copied from a cold cache by N - 1 threads (every surviving node copies),
  4 MiB reads and writes, each file fsynced once at its end as the copier does.

Columns: rebuilt MB (the ``rebuilt_bytes`` delta); rebuild MB/s = rebuilt bytes over the
time from the ``rebuild_started`` to the ``rebuild_finished`` event (their ``at_wall``);
the copy limit and the ratio; time to full resiliency from the kill; DOWN detection
(the kill to the ``node_state`` event that made it DOWN). With neither ``--size-mib``
nor ``--nodes``, the rows are 256 and 1024 MiB on 5 nodes and 256 MiB on 9; with either,
their cross product. Medians over ``--rounds`` (one rebuild of a few seconds varies a
lot from run to run). Each round also prints, on stderr, the mean number of copies
running while the rebuild ran (``copies_running``). Rates are MB/s (10^6 bytes a second).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.benchkit import (
    MiB,
    cluster_root,
    drop_caches,
    local_cluster,
    node_pids,
    peak_rss_mib,
    random_file,
    rate,
)
from shell.client import FabricClient

DEFAULT_ROWS = ((5, 256), (5, 1024), (9, 256))
CONTAINER = "rf2"
VDISK = "bench"
POLL_S = 0.1
DOWN_DEADLINE_S = 60.0
"""The leader marks a silent node DOWN after ``down_after_ms`` (4 s by default)."""
REBUILD_MIN_MB_PER_S = 5.0
"""The deadline for a rebuild assumes at least this rate: slower is a failure anyway."""
COPY_WINDOW_BYTES = 4 * MiB
"""As ``limits.REBUILD_WINDOW_BYTES``: the copier's read and write size."""


@dataclass(frozen=True)
class Result:
    rebuilt_bytes: int
    rebuild_mb_s: float
    copy_limit_mb_s: float
    full_resiliency_s: float
    down_detect_s: float
    rebuild_s: float
    copies_in_flight: float
    """Mean ``copies_running`` over the polls that saw any."""
    peak_rss_mib: float = 0.0
    """The highest peak RSS of a surviving node during the rebuild (its high-water mark
    reset just before the kill)."""


# --- filling the cluster ------------------------------------------------------------------
def parts_of(size_mib: int, n: int) -> list[int]:
    """``size_mib`` split into ``n`` whole-MiB parts, as equal as can be."""
    return [size_mib // n + (1 if i < size_mib % n else 0) for i in range(n)]


async def fill(urls: list[str], srcs: list[Path]) -> None:
    """Create the RF2 container and vdisk; write part i through node i, all at once."""
    sizes = [s.stat().st_size for s in srcs]
    async with FabricClient(urls) as client:
        await client.create_container(CONTAINER, rf=2)
        await client.create_vdisk(VDISK, CONTAINER, sum(sizes))

    async def put(i: int, offset: int) -> None:
        ordered = urls[i % len(urls) :] + urls[: i % len(urls)]
        async with FabricClient(ordered, timeout_s=3600) as client:
            await client.write_vdisk(VDISK, str(srcs[i]), offset=offset)

    offsets = [sum(sizes[:i]) for i in range(len(srcs))]
    await asyncio.gather(*(put(i, off) for i, off in enumerate(offsets)))


def egroup_files(root: str, node_id: str) -> list[Path]:
    return sorted(Path(root, "nodes", node_id).glob("disk*/*.eg"))


def pick_victim(root: str, leader: str | None, nodes: list[str]) -> str:
    """The non-leader holding the most extent-group bytes: the biggest rebuild."""
    held = {n: sum(p.stat().st_size for p in egroup_files(root, n)) for n in nodes if n != leader}
    return max(sorted(held), key=lambda n: held[n])


# --- the kill and the wait ----------------------------------------------------------------
async def wait_down(client: FabricClient, victim: str, deadline: float) -> None:
    while True:
        view = await client.cluster()
        if any(n["id"] == victim and n["state"] == "DOWN" for n in view["nodes"]):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{victim} not marked DOWN in {DOWN_DEADLINE_S:.0f} s")
        await asyncio.sleep(POLL_S)


def whole(answer: dict[str, Any], rf: dict[str, int]) -> bool:
    """Every container back to full resiliency: nothing reduced, resiliency rf - 1."""
    return all(
        not c["reduced_resiliency_bytes"] and c["resiliency"] == rf[c["name"]] - 1
        for c in answer["containers"]
    )


async def wait_events(
    client: FabricClient,
    since: int,
    wanted: dict[str, Callable[[dict[str, Any]], bool]],
    deadline: float,
) -> dict[str, dict[str, Any]]:
    """name -> the first event after ``since`` that ``wanted[name]`` accepts."""
    found: dict[str, dict[str, Any]] = {}
    while True:
        answer = await client.events(since=since)
        for e in answer["events"]:
            for name, accepts in wanted.items():
                if name not in found and accepts(e):
                    found[name] = e
        since = answer["last_seq"]
        if len(found) == len(wanted):
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"no {sorted(set(wanted) - set(found))} event: {found}")
        await asyncio.sleep(POLL_S)


async def kill_and_rebuild(
    urls: dict[str, str], root: str, size_bytes: int, per_node: int | None
) -> tuple[str, Result]:
    """Kill the victim; wait for full resiliency; the victim and what was measured (the
    copy limit still 0)."""
    async with FabricClient(list(urls.values())) as client:
        await client.rebuild(delay_s=0, bytes_per_s=0, per_node=per_node)
        view = await client.cluster()
        rf = {c["name"]: c["rf"] for c in view["containers"]}
        before = {c["name"]: c["rebuilt_bytes"] for c in view["containers"]}
        since = (await client.events(limit=1))["last_seq"]
    victim = pick_victim(root, view["leader"], list(urls))
    pid = node_pids(root)[victim]
    # The leader first: only the leader's answer counts its copies running.
    survivors = sorted(
        (u for n, u in urls.items() if n != victim), key=lambda u: u != urls[view["leader"]]
    )
    drop_caches()  # the sources are read from disk, as after a real failure
    survivor_pids = [p for n, p in node_pids(root).items() if n != victim]
    for spid in survivor_pids:
        reset_peak_rss(spid)
    killed_wall, killed = time.time(), time.monotonic()
    os.kill(pid, signal.SIGKILL)
    deadline = killed + DOWN_DEADLINE_S + size_bytes / (REBUILD_MIN_MB_PER_S * 1e6)
    async with FabricClient(survivors) as client:
        await wait_down(client, victim, killed + DOWN_DEADLINE_S)
        running = []
        while not whole(answer := await client.rebuild(), rf):
            running.append(answer["settings"]["copies_running"])
            if time.monotonic() > deadline:
                raise SystemExit(f"resiliency not restored in time: {answer}")
            await asyncio.sleep(POLL_S)
        full_s = time.monotonic() - killed
        view = await client.cluster()
        if victim in node_pids(root) or not any(
            n["id"] == victim and n["state"] == "DOWN" for n in view["nodes"]
        ):
            raise SystemExit(f"{victim} came back: the measure is void")
        rebuilt = sum(c["rebuilt_bytes"] - before.get(c["name"], 0) for c in view["containers"])
        wanted: dict[str, Callable[[dict[str, Any]], bool]] = {
            "down": lambda e: (
                e["kind"] == "node_state" and e["node"] == victim and "-> DOWN" in e["message"]
            ),
            "started": lambda e: e["kind"] == "rebuild_started",
            "finished": lambda e: e["kind"] == "rebuild_finished",
        }
        events = await wait_events(client, since, wanted, deadline)
    start, end = events["started"]["at_wall"], events["finished"]["at_wall"]
    result = Result(
        rebuilt_bytes=rebuilt,
        rebuild_mb_s=rate(rebuilt, end - start),
        copy_limit_mb_s=0.0,
        full_resiliency_s=full_s,
        down_detect_s=events["down"]["at_wall"] - killed_wall,
        rebuild_s=end - start,
        copies_in_flight=statistics.mean([r for r in running if r] or [0]),
        peak_rss_mib=max(peak_rss_mib(p) for p in survivor_pids),
    )
    return victim, result


def reset_peak_rss(pid: int) -> None:
    """Reset a process's VmHWM (Linux: "5" to clear_refs), so it measures from now."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not allowed here: the peak then covers the write phase too


# --- the machine's own limit --------------------------------------------------------------
def copy_limit(files: list[Path], threads: int, tmp: Path) -> float:
    """MB/s copying ``files`` from a cold cache, ``threads`` at once, each copy written
    a window at a time and fsynced once at its end (what the copier does per group)."""
    out_dir = tmp / "copies"
    out_dir.mkdir()
    queue = list(files)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                src = queue.pop()
            with open(src, "rb") as f, open(out_dir / src.name, "wb") as out:
                while data := f.read(COPY_WINDOW_BYTES):
                    out.write(data)
                out.flush()
                os.fsync(out.fileno())

    drop_caches()
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - t0
    total = sum(p.stat().st_size for p in out_dir.iterdir())
    for p in out_dir.iterdir():
        p.unlink()
    out_dir.rmdir()
    return rate(total, seconds)


def one_row(tmp: Path, nodes: int, size_mib: int, seed: int, per_node: int | None) -> Result:
    srcs = [
        random_file(tmp / f"part{i}.img", mib, seed=seed + i)
        for i, mib in enumerate(parts_of(size_mib, nodes))
    ]
    try:
        with local_cluster(tmp, nodes) as cfg:
            root = cluster_root(tmp, nodes)
            urls = {n.id: n.url for n in cfg.nodes}
            asyncio.run(fill(list(urls.values()), srcs))
            victim, result = asyncio.run(kill_and_rebuild(urls, root, size_mib * MiB, per_node))
            limit = copy_limit(egroup_files(root, victim), nodes - 1, tmp)
    finally:
        for s in srcs:
            s.unlink()
    return replace(result, copy_limit_mb_s=limit)


def rows(args: argparse.Namespace) -> list[tuple[int, int]]:
    if args.size_mib is None and args.nodes is None:
        return list(DEFAULT_ROWS)
    return [(n, s) for n in args.nodes or [5, 9] for s in args.size_mib or [256, 1024]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, nargs="+", help="data written (default 256 1024)")
    ap.add_argument("--nodes", type=int, nargs="+", help="cluster sizes (default 5 9)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-node", type=int, help="copies a node takes part in at once")
    args = ap.parse_args()
    results: dict[tuple[int, int], list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp_s:
        for r in range(args.rounds):
            for nodes, size_mib in rows(args):
                case = Path(tmp_s) / f"r{r}-n{nodes}-s{size_mib}"
                case.mkdir()
                run = one_row(case, nodes, size_mib, 100 * r + 10, args.per_node)
                results.setdefault((nodes, size_mib), []).append(run)
                print(f"  round {r}, {nodes} nodes, {size_mib} MiB: {run}", file=sys.stderr)
    cold = "cold cache" if drop_caches() else "page cache NOT dropped (not root)"
    per_node = f"{args.per_node} copies per node" if args.per_node else "default copies per node"
    print(
        f"random data at RF2, one node killed (SIGKILL), rebuild delay 0, no rate limit, "
        f"{per_node}; "
        f"median of {args.rounds} round(s); copy limit = the lost copies' files copied by "
        f"N-1 threads, fsync per file, {cold}"
    )
    header = (
        f"{'size':>8}{'nodes':>6}{'rebuilt':>11}{'rebuild':>13}{'copy limit':>13}{'ratio':>7}"
        f"{'full resil.':>13}{'DOWN after':>12}{'node RSS':>11}"
    )
    print(header)
    for (nodes, size_mib), runs in results.items():
        ratio = statistics.median(g.rebuild_mb_s / g.copy_limit_mb_s for g in runs)
        print(
            f"{size_mib:>4} MiB{nodes:>6}{median(runs, 'rebuilt_bytes') / 1e6:>8.0f} MB"
            f"{median(runs, 'rebuild_mb_s'):>8.0f} MB/s"
            f"{median(runs, 'copy_limit_mb_s'):>8.0f} MB/s{ratio:>7.2f}"
            f"{median(runs, 'full_resiliency_s'):>11.1f} s"
            f"{median(runs, 'down_detect_s'):>10.1f} s"
            f"{max(g.peak_rss_mib for g in runs):>7.0f} MiB"
        )


def median(runs: list[Result], field: str) -> float:
    return float(statistics.median(float(getattr(r, field)) for r in runs))


if __name__ == "__main__":
    main()
