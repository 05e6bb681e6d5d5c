"""`fabric --help` and `fabric status` start at once: they never load the heavy stacks.

Start-up time is what a user feels first, and one stray top-level import undoes it
silently. These tests run the CLI in a fresh interpreter and look at what it loaded
(sys.modules): a behaviour, not a timing, so they hold on a loaded machine too.
``scripts/bench_cli.py`` measures the times themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# What a start-up must not pay for: the HTTP client stack and its event loop, the node
# process, the codecs, progress bars, process inspection (status reads /proc), the
# numeric, plotting and distributed stacks of experiments and sweeps, and TLS certificates.
HEAVY = (
    "aiohttp",
    "asyncio",
    "nodes",
    "zstandard",
    "pyeclib",
    "xxhash",
    "tqdm",
    "psutil",
    "numpy",
    "scipy",
    "matplotlib",
    "dask",
    "cryptography",
)
HEAVY_PACKAGES = ("shell.experiment", "shell.sim.runner", "shell.sim.sweep", "fabric.sim")
"""Packages of the project that only `fabric run` and `fabric sim` need."""
CHILD = """
import json, sys
from shell.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:  # --help exits through argparse
    code = exc.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""
CONFIG = """
[cluster]
name = "startup"
[[nodes]]
id = "n1"
host = "127.0.0.1"
port = 1
disks = ["disk0"]
"""


def run_cli(tmp_path: Path, *argv: str) -> tuple[int, set[str], str]:
    """Exit code, loaded top-level modules and standard output of ``fabric ARGV``."""
    report = tmp_path / "report.json"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(report), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "FABRIC_DIR": str(tmp_path / "none")},
    )
    assert report.exists(), f"the CLI did not finish: {out.stderr}"
    result = json.loads(report.read_text())
    ours = [
        m for m in result["modules"] if any(m == p or m.startswith(f"{p}.") for p in HEAVY_PACKAGES)
    ]
    assert not ours, f"`fabric {' '.join(argv)}` loaded {ours}"
    return result["code"], {m.split(".")[0] for m in result["modules"]}, out.stdout


def test_help_loads_no_heavy_module(tmp_path: Path) -> None:
    code, modules, out = run_cli(tmp_path, "--help")
    assert code == 0 and "status" in out
    assert not modules & set(HEAVY), f"`fabric --help` loaded {sorted(modules & set(HEAVY))}"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="status reads processes in /proc")
def test_status_of_a_stopped_cluster_loads_no_heavy_module(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    (cluster / "cluster.toml").write_text(CONFIG)
    code, modules, out = run_cli(tmp_path, "status", "--dir", str(cluster))
    assert code == 0 and "startup" in out and "DOWN" in out, out
    assert not modules & set(HEAVY), f"`fabric status` loaded {sorted(modules & set(HEAVY))}"
