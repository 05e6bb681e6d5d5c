"""What node authentication costs on the write path: RF2 writes with and without it.

    .venv/bin/python scripts/bench_auth.py [--size-mib 512] [--rounds 3] [--clients 4]

Two local 3-node clusters run side by side: one as ``fabric up`` starts it (every
node-to-node request and reply signed and checked, bodies digested), one whose nodes run
``scripts/unsigned_node.py`` (the same code with the MAC, the digests and the replay
check taken out: the baseline). Rounds alternate between them so drift hits both alike.
Each round streams random data into an RF2 vdisk, from one client and from
``--clients`` clients at once, and measures the machine's own limit for the same bytes
(RF parallel files, fdatasync every 4 MiB). The table gives medians; the figure that
matters is signed / unsigned (target: at least 0.90).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabric.config import ClusterConfig
from scripts.bench_write import fabric_write
from scripts.benchkit import disk_write_limit, random_file, write_config
from shell import launcher


def start(root: Path, cfg_path: Path, signed: bool) -> ClusterConfig:
    if signed:
        return launcher.up(str(root), str(cfg_path), None, say=lambda _: None)
    cdir = launcher.ClusterDir(str(root))
    cfg = launcher.prepare(cdir, str(cfg_path), None, say=lambda _: None)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for node in cfg.nodes:
        os.makedirs(cdir.node_dir(node.id), mode=0o700, exist_ok=True)
        with open(cdir.log_path(node.id), "ab") as log:
            args = ["--config", cdir.config_path, "--id", node.id, "--dir", cdir.node_dir(node.id)]
            procs[node.id] = subprocess.Popen(
                # "node run" as in `fabric node run`: the launcher knows its nodes by it.
                [sys.executable, "-m", "scripts.unsigned_node", "node", "run", *args],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        Path(cdir.pid_path(node.id)).write_text(f"{procs[node.id].pid}\n")
    asyncio.run(launcher.wait_healthy(cdir, cfg, procs, 60))
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    rows: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp_s:
        tmp = Path(tmp_s)
        src = random_file(tmp / "random.img", args.size_mib)
        share = max(1, args.size_mib // args.clients)
        parts = [random_file(tmp / f"p{i}.img", share, seed=20 + i) for i in range(args.clients)]
        roots = {kind: tmp / kind for kind in ("signed", "unsigned")}
        cfgs = {
            kind: start(root, write_config(tmp / f"{kind}.toml", 3), kind == "signed")
            for kind, root in roots.items()
        }
        try:
            for r in range(args.rounds):
                for label, srcs in (("1 client", [src]), (f"{args.clients} clients", parts)):
                    rows.setdefault(("limit", label), []).append(disk_write_limit(src, 2, tmp))
                    for kind in ("signed", "unsigned") if r % 2 == 0 else ("unsigned", "signed"):
                        cdir = launcher.ClusterDir(str(roots[kind]))
                        os.environ["FABRIC_TOKEN"] = cdir.admin_token()
                        urls = [n.url for n in cfgs[kind].nodes]
                        tag = f"r{r}{len(srcs)}"
                        rows.setdefault((kind, label), []).append(
                            asyncio.run(fabric_write(urls, 2, srcs, tag))
                        )
        finally:
            for root in roots.values():
                launcher.down(str(root), say=lambda _: None)
    print(
        f"RF2 writes of random data, {args.size_mib} MiB per row, 3 nodes each, "
        f"median of {args.rounds} rounds (MB/s)"
    )
    print(
        f"{'':<12}{'limit':>9}{'unsigned':>10}{'signed':>9}{'signed/unsigned':>17}"
        f"{'signed/limit':>14}"
    )
    for label in ("1 client", f"{args.clients} clients"):
        limit = statistics.median(rows[("limit", label)])
        unsigned = statistics.median(rows[("unsigned", label)])
        signed = statistics.median(rows[("signed", label)])
        print(
            f"{label:<12}{limit:>9.0f}{unsigned:>10.0f}{signed:>9.0f}"
            f"{signed / unsigned:>17.2f}{signed / limit:>14.2f}"
        )


if __name__ == "__main__":
    main()
