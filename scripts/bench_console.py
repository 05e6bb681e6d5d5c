"""Console benchmark: what a chart and a summary page cost a node, beside their floors.

    .venv/bin/python scripts/bench_console.py [--runs 15] [--no-cluster]

Drawing: one chart of an hour of samples (``TRENDS_KEPT``) with ``nodes.console.charts.
draw``, beside matplotlib's own floor, an empty figure of the same size saved as SVG;
the ratio is what our axes, lines and labels add. Serving (unless ``--no-cluster``, on a
live local 3-node cluster on loopback): ``GET /`` (the summary, rendered from the
leader's view and its samples) and ``GET /console/charts/throughput.svg``, without a
version (the node asks the leader which samples are current) and with the one the page
names (a drawing the node holds, no question to the leader), beside
``GET /api/v1/health``, the cheapest authenticated request a node answers. The table
gives medians and ratios to the floor.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabric import limits
from nodes.console.charts import CHARTS, draw
from nodes.services.trends import Trends
from scripts.benchkit import local_cluster

MiB = 1 << 20


def median_s(run: Callable[[], object], runs: int) -> float:
    run()  # imports, caches
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def hour_of_samples() -> list[dict[str, object]]:
    t = Trends(limits.TRENDS_KEPT)
    for i in range(limits.TRENDS_KEPT):
        usage = {
            "disk_used_bytes": i * 3 * MiB,
            "logical_bytes": i * MiB,
            "physical_bytes": i * 2 * MiB,
        }
        t.add(10.0 * i, 1.7e9 + 10 * i, usage, {"n1": (i * i * MiB, i * MiB)})
    samples: list[dict[str, object]] = t.to_json(limits.TRENDS_KEPT)["samples"]
    return samples


def empty_svg() -> bytes:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 2.6), dpi=100, layout="constrained")
    figure.add_subplot()
    out = io.BytesIO()
    figure.savefig(out, format="svg")
    return out.getvalue()


def chart_src(page: bytes) -> str:
    """The throughput chart's address on a summary page (with its version)."""
    found = re.search(rb'src="(/console/charts/throughput\.svg\?v=[^"]+)"', page)
    assert found, "no throughput chart on the summary"
    return found.group(1).decode().replace("&amp;", "&")


def get(url: str, token: str) -> Callable[[], bytes]:
    """A GET as a client makes it: a bearer token for the API, the session cookie for the
    console's pages."""
    api = "/api/" in url
    header = ("Authorization", f"Bearer {token}") if api else ("Cookie", f"fabric_session={token}")

    def run() -> bytes:
        req = urllib.request.Request(url, headers=dict([header]))
        with urllib.request.urlopen(req, timeout=30) as resp:
            body: bytes = resp.read()
            return body

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--no-cluster", action="store_true")
    args = ap.parse_args()
    samples = hour_of_samples()
    rows: list[tuple[str, float, float]] = []
    floor = median_s(empty_svg, args.runs)
    chart = median_s(lambda: draw(CHARTS["throughput"], samples), args.runs)
    rows += [
        ("empty matplotlib SVG (floor)", floor, floor),
        ("chart, an hour of samples", chart, floor),
    ]
    if not args.no_cluster:
        with (
            tempfile.TemporaryDirectory(prefix="fabric-bench-", dir=os.getcwd()) as tmp_s,
            local_cluster(Path(tmp_s), 3) as config,
        ):
            url = config.nodes[1].url
            token = os.environ["FABRIC_TOKEN"]
            summary = get(url + "/", token)
            deadline = time.monotonic() + 3 * limits.TRENDS_SAMPLE_S
            while b"/console/charts/" not in summary():  # the leader's first sample
                if time.monotonic() > deadline:
                    raise SystemExit("no chart on the summary after the first sample")
                time.sleep(0.5)
            health = median_s(get(url + "/api/v1/health", token), args.runs)
            rows += [
                ("GET /api/v1/health (floor)", health, health),
                ("GET / (summary)", median_s(summary, args.runs), health),
                (
                    "GET a chart, no version",
                    median_s(get(url + "/console/charts/throughput.svg", token), args.runs),
                    health,
                ),
                (
                    "GET a chart as the page names it",
                    median_s(get(url + chart_src(summary()), token), args.runs),
                    health,
                ),
            ]
    print(f"median of {args.runs} runs")
    print(f"{'what':<32}{'median':>10}{'ratio':>8}")
    for name, median, base in rows:
        print(f"{name:<32}{median * 1000:>8.1f}ms{median / base:>8.1f}")


if __name__ == "__main__":
    main()
