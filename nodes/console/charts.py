"""``/console/charts/NAME.svg``: capacity and disk throughput over time, as SVG.

matplotlib draws them on the node (the Agg-free SVG backend, no pyplot state), so the
summary shows them as plain images: readable without JavaScript, nothing to build. The
samples are the leader's (``nodes/services/trends.py``); a drawing is kept until the
leader has a new sample, so many open tabs cost one drawing per sample, not one each.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fabric import limits
from nodes.api import NODE
from nodes.console.units import size

UTC = datetime.UTC


@dataclass(frozen=True)
class Line:
    key: str
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    lines: tuple[Line, ...]
    unit: Callable[[float], str]
    per: str = ""
    """What the axis unit is per (``/s``)."""


def _rate(v: float) -> str:
    return f"{size(v)}/s"


BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def axis_unit(largest: float) -> tuple[str, float]:
    """The binary unit the axis counts in, and its size in bytes: the largest value
    reads between 1 and 1024 of it, so the ticks are round numbers of that unit."""
    scale = 1.0
    for unit in BINARY_UNITS:
        if largest < 1024 * scale or unit == BINARY_UNITS[-1]:
            return unit, scale
        scale *= 1024
    raise AssertionError("unreachable")


CHARTS: dict[str, Chart] = {
    "capacity": Chart(
        "Capacity",
        (
            Line("disk_used_bytes", "disk used"),
            Line("physical_bytes", "physical (every copy)"),
            Line("logical_bytes", "logical (as written)"),
        ),
        size,
    ),
    "throughput": Chart(
        "Disk throughput",
        (
            Line("written_bytes_per_s", "written (every copy, rebuilds)"),
            Line("read_bytes_per_s", "read (clients, rebuilds, scrubs)"),
        ),
        _rate,
        "/s",
    ),
}
"""The charts the summary shows, in its order. Disk capacity is not drawn: a cluster on
one file system reports that file system's size for each disk, and a line at hundreds
of GiB would flatten the others (the Capacity card shows it beside what is used)."""

CACHE = web.AppKey("console_charts", dict)
"""(chart, ``version``) -> SVG bytes: the newest drawings of each chart."""
FEW_SAMPLES = 20
MIN_SPAN = datetime.timedelta(minutes=5)
_DRAWING = threading.Lock()
"""One drawing at a time in a process: matplotlib's settings (``rc_context``) are the
process's, and each drawing takes a core for a moment."""


def draw(chart: Chart, samples: list[dict[str, Any]]) -> bytes:
    """One chart as SVG bytes. Imported here: a node whose console nobody opens never
    loads matplotlib."""
    from matplotlib import rc_context
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # Text as text (smaller, selectable, read by the tests) and fixed element ids: the
    # same samples give the same bytes.
    with _DRAWING, rc_context({"svg.fonttype": "none", "svg.hashsalt": "fabric"}):
        figure = Figure(figsize=(6.4, 2.6), dpi=100, layout="constrained")
        ax = figure.add_subplot()
        # Datetimes, which matplotlib plots as dates (its stubs only name numbers).
        times: Any = [datetime.datetime.fromtimestamp(s["wall"], UTC) for s in samples]
        drawn = [[s[line.key] for s in samples] for line in chart.lines]
        unit, scale = axis_unit(max((v for vs in drawn for v in vs if v is not None), default=0))
        # Few samples (a new leader): a dot for each, since a lone one draws no line.
        marker = "o" if len(samples) < FEW_SAMPLES else ""
        for line, values in zip(chart.lines, drawn, strict=True):
            scaled = [float("nan") if v is None else v / scale for v in values]
            ax.plot(times, scaled, marker=marker, markersize=3, label=line.label, linewidth=1.6)
        if times:  # at least a few minutes wide, ending at the newest sample
            ax.set_xlim(min(times[0], times[-1] - MIN_SPAN), times[-1])
        locator = AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
        dates = ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
        # The corner label that names the day and hour says the zone too.
        dates.offset_formats = [
            "UTC",
            "%Y UTC",
            "%Y-%m UTC",
            "%Y-%m-%d UTC",
            "%Y-%m-%d UTC",
            "%Y-%m-%d %H:%M UTC",
        ]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(dates)
        ax.yaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10], integer=unit == "B"))
        ax.set_ylabel(unit + chart.per, fontsize=8)
        ax.set_ylim(0, max(ax.get_ylim()[1], 1))  # all zeros: 0 to 1 of the unit
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1), ncols=2, frameon=False)
        out = io.BytesIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def describe(chart: Chart, samples: list[dict[str, Any]]) -> str:
    """The chart in words (its image's alt text): the newest value of each line."""
    if not samples:
        return f"{chart.title}: no samples yet"
    last = samples[-1]
    parts = [
        f"{line.label} {chart.unit(last[line.key])}"
        for line in chart.lines
        if last[line.key] is not None
    ]
    if not parts:
        return f"{chart.title}: no rate yet (a rate needs two samples)"
    return f"{chart.title}, newest sample: " + ", ".join(parts)


def version(view: dict[str, Any]) -> str:
    """What names the samples of a cluster view with trends: who sampled them, in which
    term (a leader never leads the same term twice) and how many it had taken. Samples of
    one version never change, so neither does their drawing."""
    trends = view["trends"]
    return f"{trends.get('sampled_by', '')}-{view['term']}-{trends['taken']}"


async def chart_svg(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    chart = CHARTS.get(name)
    if chart is None:
        raise web.HTTPNotFound(reason=f"no chart {name!r}")
    cache = request.app[CACHE]
    # The page names the version it shows: a drawing of it needs no question to the leader.
    svg = cache.get((name, request.query.get("v", "")))
    if svg is None:
        view = await request.app[NODE].cluster_view(trends=limits.TRENDS_KEPT)
        key = (name, version(view))
        svg = cache.get(key)
        if svg is None:
            svg = await asyncio.to_thread(draw, chart, view["trends"]["samples"])
            if len(cache) >= 2 * len(CHARTS):
                cache.clear()  # older drawings: no page names them any more
            cache[key] = svg
    # The page names each drawing by its sample count: a browser may keep it.
    return web.Response(
        body=svg,
        content_type="image/svg+xml",
        headers={"Cache-Control": "private, max-age=600"},
    )


def routes() -> list[web.RouteDef]:
    return [web.get("/console/charts/{name}.svg", chart_svg)]


def install(app: web.Application) -> None:
    app[CACHE] = {}
    app.add_routes(routes())
