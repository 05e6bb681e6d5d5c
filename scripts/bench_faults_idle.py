"""What the fault wrappers cost when no fault is on: disk appends through ``FaultyDisk``
beside the same appends on the bare ``FileDisk``, in one run.

    .venv/bin/python scripts/bench_faults_idle.py [--appends 20000] [--bytes 65536] [--rounds 5]

Each round appends ``--appends`` buffers to a file of each disk (no fsync: the wrapper's
cost, not the device's, is the question), alternating which goes first. The table gives
the median appends/s and MB/s and the ratio wrapped / bare (1.00: free).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodes.faultinject import FaultyDisk
from nodes.runtime import FileDisk


async def appends_per_s(disk: object, n: int, buf: bytes, name: str) -> float:
    append = disk.append  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for _ in range(n):
        await append(name, buf)
    return n / (time.perf_counter() - t0)


async def main_async(args: argparse.Namespace) -> tuple[list[float], list[float]]:
    buf = random.Random(1).randbytes(args.bytes)
    bare_rates: list[float] = []
    wrapped_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fabric-bench-") as tmp:
        bare = FileDisk("bare", str(Path(tmp) / "bare"))
        wrapped = FaultyDisk(FileDisk("wrapped", str(Path(tmp) / "wrapped")), random.Random(2))
        for r in range(args.rounds):
            order = [(bare, bare_rates), (wrapped, wrapped_rates)]
            for disk, rates in order if r % 2 == 0 else reversed(order):
                name = f"r{r}.eg"
                rates.append(await appends_per_s(disk, args.appends, buf, name))
                await disk.delete(name)  # type: ignore[attr-defined]
        bare.close()
        wrapped.inner.close()
    return bare_rates, wrapped_rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--appends", type=int, default=20000)
    ap.add_argument("--bytes", type=int, default=65536)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    bare, wrapped = asyncio.run(main_async(args))
    b, w = statistics.median(bare), statistics.median(wrapped)
    mb = args.bytes / 1e6
    print(f"{args.appends} appends of {args.bytes} B per round, median of {args.rounds} rounds")
    print(f"{'':<22}{'appends/s':>11}{'MB/s':>8}{'ratio':>7}")
    print(f"{'FileDisk (baseline)':<22}{b:>11,.0f}{b * mb:>8.0f}{1:>7.2f}")
    print(f"{'FaultyDisk, no fault':<22}{w:>11,.0f}{w * mb:>8.0f}{w / b:>7.2f}")


if __name__ == "__main__":
    main()
