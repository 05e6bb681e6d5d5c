"""CLI start-up benchmark: ``fabric --help`` and ``fabric status`` beside ``python -c pass``.

    .venv/bin/python scripts/bench_cli.py [--runs 21] [--no-cluster] [--checkout DIR]

Each command runs ``--runs`` times, the three kinds interleaved (so a change in the
machine's load hits them alike), through the installed ``fabric`` script as a user
runs it. ``fabric status`` runs twice over: against a directory whose cluster is down
(config and process checks only) and, unless ``--no-cluster``, against a live local
3-node cluster (one HTTP question to a node on loopback). The table gives the median
wall time of each, its overhead over ``python -c pass`` (the interpreter's own start-up,
which no command can avoid) and the ratio of the two; the target is a start-up of at
most 0.2 s. The commands run with bytecode caches, as an installed ``fabric`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.benchkit import local_cluster, write_config

TARGET_S = 0.2


def fabric_script() -> str:
    """The ``fabric`` console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("fabric")
    found = str(beside) if beside.exists() else shutil.which("fabric")
    if found is None:
        raise SystemExit("no `fabric` script: install the project (scripts/setup.sh)")
    return found


# As an installed fabric runs: with bytecode caches (pip writes them at install; an
# environment that forbids writing them would time the compiler instead).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def seconds(cmd: list[str], cwd: str | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=ENV, cwd=cwd
    )
    return time.perf_counter() - t0


@contextlib.contextmanager
def down_cluster_dir(tmp: Path) -> Iterator[str]:
    """A cluster directory with its config but no node running (``fabric status`` says
    DOWN for each node after checking its pid file)."""
    root = tmp / "down"
    root.mkdir()
    write_config(root / "cluster.toml", 3)
    yield str(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--no-cluster", action="store_true", help="skip the live-cluster status")
    ap.add_argument(
        "--checkout",
        help="time the CLI of this source tree (python -m shell.cli run in it), e.g. an "
        "older release, instead of the installed script",
    )
    args = ap.parse_args()
    fabric = [sys.executable, "-m", "shell.cli"] if args.checkout else [fabric_script()]
    cwd = args.checkout
    with tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp_s:
        tmp = Path(tmp_s)
        with contextlib.ExitStack() as stack:
            down_dir = stack.enter_context(down_cluster_dir(tmp))
            cases = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "fabric --help": [*fabric, "--help"],
                "fabric status (cluster down)": [*fabric, "status", "--dir", down_dir],
            }
            if not args.no_cluster:
                stack.enter_context(local_cluster(tmp, 3))
                live = str(tmp / "c3")
                cases["fabric status (3 nodes up)"] = [*fabric, "status", "--dir", live]
            for cmd in cases.values():
                seconds(cmd, cwd)  # warms the page cache and writes the bytecode caches
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.runs):
                for name, cmd in cases.items():
                    times[name].append(seconds(cmd, cwd))
    base = statistics.median(times["python -c pass"])
    print(
        f"{args.checkout or ' '.join(fabric)}: median of {args.runs} interleaved runs; "
        f"target: start-up <= {TARGET_S} s"
    )
    print(f"{'command':<30}{'median':>9}{'overhead':>10}{'ratio':>7}{'':>6}")
    for name, runs in times.items():
        median = statistics.median(runs)
        verdict = "" if name.startswith("python") else "ok" if median <= TARGET_S else "MISS"
        print(f"{name:<30}{median:>8.3f}s{median - base:>+9.3f}s{median / base:>7.1f}{verdict:>6}")


if __name__ == "__main__":
    main()
