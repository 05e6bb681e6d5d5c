"""Image-upload benchmark: our upload and conversion beside ``qemu-img convert`` of the same file.

    .venv/bin/python scripts/bench_images.py [--size-mib 1024] [--pairs 3] [--formats a,b]

One local 3-node cluster (RF2, dedup, zstd); one realistic mixed disk (a quarter each
of zeros, one repeated MiB, text, random data) is turned by qemu-img into each source
format. Then, per format, ``--pairs`` times in alternation:
* baseline: ``qemu-img convert -O raw`` of the source to a local file, then fsync;
* ours: create an image in a fresh container (dedup must not let one upload ride on
  another's bytes) and stream the source through the API until it is ACTIVE (converted
  on the fly, stored RF2 with dedup and zstd); the image is deleted afterwards.
The table gives the median time of each, their rates in MB/s (10^6 bytes a second) of
*virtual* disk, the median of the per-pair ratios ours/qemu-img beside the target
(compressed sources <= 1.3x, uncompressed <= 1.5x), the bytes on the wire against the
virtual size, the CPU seconds each side used (qemu-img's; ours: the client's and every
node's), and the receiving node's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.benchkit import MB, MiB, local_cluster, node_pids, peak_rss_mib
from shell.client import FabricClient


@dataclass(frozen=True)
class Format:
    label: str
    qemu_format: str
    options: tuple[str, ...]
    target: float  # the bound on ours/qemu-img


COMPRESSED_TARGET = 1.3
UNCOMPRESSED_TARGET = 1.5
FORMATS = [
    Format("qcow2 compressed", "qcow2", ("-c",), COMPRESSED_TARGET),
    Format("vmdk streamOptimized", "vmdk", ("-o", "subformat=streamOptimized"), COMPRESSED_TARGET),
    Format("raw", "raw", (), UNCOMPRESSED_TARGET),
    Format("qcow2", "qcow2", (), UNCOMPRESSED_TARGET),
    Format("vmdk monolithicSparse", "vmdk", (), UNCOMPRESSED_TARGET),
    Format("vhd", "vpc", (), UNCOMPRESSED_TARGET),
    Format("vhdx", "vhdx", (), UNCOMPRESSED_TARGET),
]
KEYS = {
    "qcow2c": "qcow2 compressed",
    "stream": "vmdk streamOptimized",
    "raw": "raw",
    "qcow2": "qcow2",
    "sparse": "vmdk monolithicSparse",
    "vhd": "vhd",
    "vhdx": "vhdx",
}


def make_mixed(path: Path, size: int) -> None:
    """Quarter each: zeros, one repeated random MiB, compressible text, random."""
    rng = random.Random(7)
    dup = rng.randbytes(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            kind = i % 4
            if kind == 2:  # text that differs per MiB: it compresses but does not dedup
                lines = (
                    b"%010d the quick brown fox jumps over the lazy dog\n" % (i * 99_991 + n)
                    for n in range(MiB // 50 + 1)
                )
                f.write(b"".join(lines)[:MiB])
            else:
                f.write(bytes(MiB) if kind == 0 else dup if kind == 1 else rng.randbytes(MiB))


def cpu_s(pids: list[int]) -> float:
    """CPU seconds used so far by this process, its waited-for children and ``pids``."""
    me = os.times()
    total = me.user + me.system + me.children_user + me.children_system
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def qemu_baseline(src: Path, fmt: Format, tmp: Path) -> tuple[float, float]:
    """Seconds for ``qemu-img convert -O raw`` of ``src`` to a local file, then fsync;
    and the CPU seconds that took."""
    out = tmp / "qemu-out.raw"
    c0 = cpu_s([])
    t0 = time.perf_counter()
    subprocess.run(
        ["qemu-img", "convert", "-f", fmt.qemu_format, "-O", "raw", str(src), str(out)],
        check=True,
    )
    fd = os.open(out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    elapsed = time.perf_counter() - t0
    cpu = cpu_s([]) - c0
    out.unlink()
    return elapsed, cpu


async def upload(url: str, src: Path, name: str) -> tuple[float, dict[str, object]]:
    """Seconds from creating the image to its ACTIVE answer; the image as answered."""
    async with FabricClient([url], timeout_s=3600) as client:
        await client.create_container(name, rf=2, dedup=True, compression="zstd")
        t0 = time.perf_counter()
        image = await client.create_image(name, container=name)
        done = await client.upload_image(image["id"], str(src))
        elapsed = time.perf_counter() - t0
        # Frees the space for the next rounds (the scanner collects the extents).
        await client.delete_image(image["id"])
        return elapsed, done


@dataclass
class Row:
    fmt: Format
    base_s: list[float]
    ours_s: list[float]
    base_cpu_s: list[float]
    ours_cpu_s: list[float]
    wire_bytes: int
    virtual_bytes: int
    rss_mib: float

    @property
    def ratio(self) -> float:
        """The median of the per-pair ratios: each pair ran back to back, in one load."""
        return statistics.median(o / b for o, b in zip(self.ours_s, self.base_s, strict=True))


def run_format(fmt: Format, raw: Path, tmp: Path, url: str, pids: list[int], pairs: int) -> Row:
    src = tmp / f"src.{fmt.qemu_format}"
    convert = ["qemu-img", "convert", "-f", "raw", "-O", fmt.qemu_format, *fmt.options]
    subprocess.run([*convert, str(raw), str(src)], check=True)
    base: list[float] = []
    ours: list[float] = []
    base_cpu: list[float] = []
    ours_cpu: list[float] = []
    virtual = 0
    for i in range(pairs):
        # Alternate which goes first, so a drift in the machine's load hits both alike.
        order = ("base", "ours") if i % 2 == 0 else ("ours", "base")
        for which in order:
            if which == "base":
                seconds, cpu = qemu_baseline(src, fmt, tmp)
                base.append(seconds)
                base_cpu.append(cpu)
            else:
                name = f"{fmt.label.replace(' ', '-')}-{i}"
                c0 = cpu_s(pids)
                seconds, image = asyncio.run(upload(url, src, name))
                ours_cpu.append(cpu_s(pids) - c0)
                assert image["state"] == "ACTIVE", image
                virtual = int(str(image["virtual_size"]))
                ours.append(seconds)
    row = Row(
        fmt, base, ours, base_cpu, ours_cpu, src.stat().st_size, virtual, peak_rss_mib(pids[0])
    )
    src.unlink()
    return row


def print_table(rows: list[Row], size_mib: int, pairs: int) -> None:
    print(
        f"{size_mib} MiB virtual; 3 nodes, a container per upload (RF2, dedup, zstd); "
        "source: 1/4 zeros, 1/4 repeated MiB, 1/4 text, 1/4 random"
    )
    print(
        f"median of {pairs} alternating pairs; MB/s = 10^6 bytes/s of virtual disk; "
        "ratio = median of ours/qemu-img per pair"
    )
    print(
        "CPU s: qemu-img's, and ours: the client's and all nodes' (the machine has "
        f"{os.cpu_count()} cores)"
    )
    print(
        f"{'source':<22}{'qemu-img':>10}{'ours':>9}{'qemu MB/s':>11}{'ours MB/s':>11}"
        f"{'ratio':>7}{'target':>8}{'':>5}{'qemu CPU':>10}{'ours CPU':>10}"
        f"{'wire/virtual':>14}{'node peak RSS':>15}"
    )
    for r in rows:
        base, ours = statistics.median(r.base_s), statistics.median(r.ours_s)
        ok = "ok" if r.ratio <= r.fmt.target else "MISS"
        print(
            f"{r.fmt.label:<22}{base:>9.2f}s{ours:>8.2f}s"
            f"{r.virtual_bytes / MB / base:>11.0f}{r.virtual_bytes / MB / ours:>11.0f}"
            f"{r.ratio:>7.2f}{r.fmt.target:>7.1f}x{ok:>5}"
            f"{statistics.median(r.base_cpu_s):>9.2f}s{statistics.median(r.ours_cpu_s):>9.2f}s"
            f"{r.wire_bytes / r.virtual_bytes:>14.2f}{r.rss_mib:>11.0f} MiB"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="virtual size of each disk")
    ap.add_argument("--pairs", type=int, default=3, help="alternating qemu-img/ours pairs")
    ap.add_argument(
        "--formats",
        default=",".join(KEYS),
        help=f"comma-separated subset of {','.join(KEYS)}",
    )
    args = ap.parse_args()
    wanted = [KEYS[k] for k in args.formats.split(",")]
    formats = [f for f in FORMATS if f.label in wanted]
    with tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp_s:
        tmp = Path(tmp_s)
        raw = tmp / "mixed.raw"
        make_mixed(raw, args.size_mib * MiB)
        with local_cluster(tmp, 3) as cfg:
            node = cfg.nodes[0]
            pids = node_pids(str(tmp / "c3"))
            # The receiving node first: its peak RSS is the one reported.
            order = [pids[node.id], *(p for n, p in pids.items() if n != node.id)]
            print(f"receiving node pid {order[0]}", file=sys.stderr, flush=True)
            rows = [run_format(f, raw, tmp, node.url, order, args.pairs) for f in formats]
    print_table(rows, args.size_mib, args.pairs)


if __name__ == "__main__":
    main()
