"""Image-upload benchmark: our end-to-end upload beside qemu-img convert of the same file.

    .venv/bin/python scripts/bench_images.py [--size-mib 1024]

In one run, on a local 3-node cluster (RF2, dedup, zstd; a container per upload),
for a qcow2 with compressed clusters, a streamOptimized VMDK and a plain qcow2, all made
from one realistic mixed disk (a quarter each of zeros, a repeated block, text and
random data):
* baseline: ``qemu-img convert -O raw`` of the file to a local file, then fsync;
* ours: create the image and stream the file through the API until it is ACTIVE
  (converted on the fly, stored RF2 with dedup and zstd);
with the ratio of the two times, the bytes on the wire against the virtual size, and the
receiving node's peak RSS, at two image sizes to show it does not grow with the image.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabric.config import load_config
from scripts.bench_datapath import make_mixed, peak_rss_mib
from scripts.benchkit import write_config
from shell import launcher
from shell.client import FabricClient

MiB = 1 << 20
FORMATS = [
    ("qcow2 compressed", "qcow2", ["-c"]),
    ("vmdk streamOptimized", "vmdk", ["-o", "subformat=streamOptimized"]),
    ("qcow2 uncompressed", "qcow2", []),
]


def qemu_baseline(src: Path, tmp: Path) -> float:
    out = tmp / "qemu-out.raw"
    t0 = time.perf_counter()
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(src), str(out)], check=True)
    fd = os.open(out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    elapsed = time.perf_counter() - t0
    out.unlink()
    return elapsed


async def upload(url: str, src: Path, name: str) -> tuple[float, dict[str, object]]:
    async with FabricClient([url], timeout_s=3600) as client:
        # A container of its own: dedup must not let one upload ride on another's bytes.
        await client.create_container(name, rf=2, dedup=True, compression="zstd")
        t0 = time.perf_counter()
        image = await client.create_image(name, container=name)
        done = await client.upload_image(image["id"], str(src))
        return time.perf_counter() - t0, done


def run_size(
    size_mib: int, tmp: Path, url: str, pid: int
) -> list[tuple[str, float, float, int, int, float]]:
    raw = tmp / f"mixed{size_mib}.raw"
    make_mixed(raw, size_mib * MiB)
    rows = []
    for label, fmt, opts in FORMATS:
        src = tmp / f"src{size_mib}.{fmt}"
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", fmt, *opts, str(raw), str(src)], check=True
        )
        base = qemu_baseline(src, tmp)
        ours, image = asyncio.run(upload(url, src, f"{fmt}{size_mib}{len(rows)}"))
        assert image["state"] == "ACTIVE", image
        rows.append(
            (label, base, ours, src.stat().st_size, int(image["virtual_size"]), peak_rss_mib(pid))
        )
        src.unlink()
    raw.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    sizes = sorted({max(64, args.size_mib // 4), args.size_mib})
    with tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp_s:
        tmp = Path(tmp_s)
        cfg_path = write_config(tmp / "c3.toml", 3)
        root = str(tmp / "c3")
        launcher.up(root, str(cfg_path), None, say=lambda _: None)
        node = load_config(str(cfg_path)).nodes[0]
        pid = launcher.ClusterDir(root).pid(node.id) or 0
        try:
            results = {size: run_size(size, tmp, node.url, pid) for size in sizes}
        finally:
            launcher.down(root, say=lambda _: None)
    print(
        "3 nodes, a container per upload (RF2, dedup, zstd); source: 1/4 zeros, "
        "1/4 repeated block, 1/4 text, 1/4 random"
    )
    print(
        f"{'virtual':>8}  {'source':<22}{'qemu-img':>10}{'ours':>9}{'ratio':>7}"
        f"{'wire/virtual':>14}{'node peak RSS':>15}"
    )
    for size, rows in results.items():
        for label, base, ours, wire, virtual, rss in rows:
            print(
                f"{size:>5}MiB  {label:<22}{base:>9.2f}s{ours:>8.2f}s{ours / base:>7.2f}"
                f"{wire / virtual:>14.2f}{rss:>11.0f} MiB"
            )


if __name__ == "__main__":
    main()
