"""What the console's summary shows, from the cluster view the API serves."""

from __future__ import annotations

import dataclasses
from typing import Any

from fabric import limits
from fabric.metadata import healing
from nodes.console.charts import CHARTS, describe, version
from nodes.node import Node


def health(view: dict[str, Any]) -> str:
    """The cluster's state in one word: DOWN without a leader, DEGRADED while any node
    is not UP, else UP."""
    if view.get("leader") is None:
        return "DOWN"
    if any(n["state"] != "UP" for n in view["nodes"]):
        return "DEGRADED"
    return "UP"


async def summary(node: Node) -> dict[str, Any]:
    """``GET /api/v1/cluster``'s answer with what the summary page derives from it."""
    view = await node.cluster_view(trends=1)  # the newest: the charts' words and version
    shown = version(view)
    trends = view.pop("trends")
    states = [n["state"] for n in view["nodes"]]
    rebuilding = [c for c in view["containers"] if c.get("reduced_resiliency_bytes")]
    scrub = healing.effective_scrub(node.metadata.state, node.config.scrub)
    return {
        **view,
        "health": health(view),
        "node_states": {s: states.count(s) for s in ("UP", "DEGRADED", "DOWN")},
        "rebuilding": rebuilding,
        "scrub": dataclasses.asdict(scrub),
        # Each node scrubs its own disks; the node serving the page reports its passes
        # (under its own id: the view's served_by may be the leader that built it).
        "scrub_node": node.id,
        "scrub_here": dataclasses.asdict(node.scrubber.stats),
        "charts": [
            {
                "name": name,
                "title": chart.title,
                "alt": describe(chart, trends["samples"]),
                "version": shown,
            }
            for name, chart in CHARTS.items()
        ],
        "samples": len(trends["samples"]),
        "trends_every_s": limits.TRENDS_SAMPLE_S * node.config.timeouts.background_scale,
    }
