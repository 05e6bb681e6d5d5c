"""What the benchmarks share: a local cluster, the machine's own limits, honest units.

Rates are MB/s (10^6 bytes a second), as disks and peers quote them; sizes are MiB.
Nothing here imports the tests: the benchmarks run on an install without pytest.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from fabric.config import (
    ClusterConfig,
    default_config_text,
    load_config,
    parse_config,
    render_config,
    sized_config,
)
from shell import launcher

MiB = 1 << 20
MB = 1_000_000


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def write_config(path: Path, nodes: int, voters: int | None = None) -> Path:
    """A config of ``nodes`` nodes on free loopback ports (``voters``: the first N vote)."""
    cfg = sized_config(parse_config(default_config_text()), nodes)
    ports = free_ports(nodes)
    cfg = replace(
        cfg,
        nodes=tuple(replace(n, port=p) for n, p in zip(cfg.nodes, ports, strict=True)),
        voters=cfg.voters if voters is None else tuple(n.id for n in cfg.nodes[:voters]),
    )
    path.write_text(render_config(cfg))
    return path


@contextlib.contextmanager
def local_cluster(tmp: Path, nodes: int, voters: int | None = None) -> Iterator[ClusterConfig]:
    """Real node processes on loopback for the length of the block."""
    cfg_path = write_config(tmp / f"c{nodes}.toml", nodes, voters)
    root = str(tmp / f"c{nodes}")
    launcher.up(root, str(cfg_path), None, say=lambda _: None)
    use_token(root)
    try:
        yield load_config(str(cfg_path))
    finally:
        launcher.down(root, say=lambda _: None)


def use_token(root: str) -> None:
    """Clients made from now on (``FabricClient``) carry the admin token of ``root``."""
    os.environ["FABRIC_TOKEN"] = launcher.ClusterDir(root).token()


def cluster_root(tmp: Path, nodes: int) -> str:
    return str(tmp / f"c{nodes}")


def node_pids(root: str) -> dict[str, int]:
    cdir = launcher.ClusterDir(root)
    return {
        n.id: pid
        for n in load_config(root + "/cluster.toml").nodes
        if (pid := cdir.pid(n.id)) is not None
    }


def peak_rss_mib(pid: int) -> float:
    """The process's high-water resident set (VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def random_file(path: Path, size_mib: int, seed: int = 3) -> Path:
    """Incompressible bytes that never repeat: no dedup or compression gain possible."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(rng.randbytes(MiB))
    return path


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


def disk_read_limit(paths: list[Path]) -> float:
    """MB/s reading ``paths`` at once, one thread each (cold if ``drop_caches`` could)."""

    def read(p: Path) -> None:
        with open(p, "rb") as f:
            while f.read(4 * MiB):
                pass

    drop_caches()
    threads = [threading.Thread(target=read, args=(p,)) for p in paths]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(p.stat().st_size for p in paths) / MB / (time.perf_counter() - t0)


def drop_caches() -> bool:
    """Empty the page cache (root only), so reads come from the disk: the honest limit."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def disk_write_limit(src: Path, copies: int, tmp: Path, chunk: int = 4 * MiB) -> float:
    """MB/s of ``src`` written to ``copies`` files at once, one thread each, every
    ``chunk`` fsynced as the fabric does: the machine's own limit for that many
    durable copies. Rate is of the source bytes (as a client sees its upload)."""
    size = src.stat().st_size

    def write(i: int) -> None:
        with open(src, "rb") as f, open(tmp / f"limit{i}", "wb") as out:
            while data := f.read(chunk):
                out.write(data)
                out.flush()
                os.fdatasync(out.fileno())

    os.sync()
    threads = [threading.Thread(target=write, args=(i,)) for i in range(copies)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    for i in range(copies):
        (tmp / f"limit{i}").unlink()
    return size / MB / seconds


def rate(nbytes: int, seconds: float) -> float:
    return nbytes / MB / seconds
