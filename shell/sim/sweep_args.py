"""The sweep flags of ``fabric sim``, apart from the sweep itself: building the CLI's
parser must not import what a sweep runs on (scipy alone takes a second)."""

from __future__ import annotations

import argparse


def add_sweep_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--sweep",
        metavar="'KEY=V1,V2 ...'",
        help="run every combination of these settings, each over --seeds (keys: rf, ec, "
        "policy, rebuild_rate, rebuild_delay_s, nodes, racks, node_afr; docs/SWEEPS.md)",
    )
    parser.add_argument(
        "--seeds", default="1-10", help="seeds of each point: 7, 1-1000 or 1,5,9 (default 1-10)"
    )
    parser.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="run on this Dask cluster's workers"
    )
    parser.add_argument(
        "--workers", type=int, help="local worker processes (default: one per core)"
    )
