"""Watching the cluster once a second while an experiment runs.

Each sample asks any node for ``GET /api/v1/cluster`` (nodes, leader, containers) and
``GET /api/v1/rebuild`` (bytes at reduced resiliency, bytes rebuilt), and every node
for its ``/metrics`` (the rebuild bytes it received, its degraded reads). A sample that
gets no answer in time is kept as one (``ok=False``): a gap in the plots shows it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from fabric.timeline import Sample
from shell.experiment.api import ClusterApi
from shell.experiment.workloads import RunClock

SAMPLE_TIMEOUT_S = 0.9
REPAIRS = re.compile(
    r'^(fabric_replica_repairs|fabric_scrub_repaired)(?:_total)?\{node="([^"]+)"\} (\S+)$', re.M
)
"""Bad extent copies mended: by the read path (counted by the node that read) and by the
scrubber. The read path records no event, so its counter is the only trace of it."""
METRIC = re.compile(
    r'^(fabric_rebuild_copied_bytes|fabric_degraded_reads)(?:_total)?\{node="([^"]+)"\} (\S+)$',
    re.M,
)
PULLED = re.compile(
    r'^fabric_rebuild_pulled_bytes_total\{node="([^"]+)",source="([^"]+)"\} (\S+)$', re.M
)
SERIES = tuple(
    f"{name}_total"
    for name in (
        "fabric_replica_repairs",
        "fabric_scrub_repaired",
        "fabric_rebuild_copied_bytes",
        "fabric_degraded_reads",
        "fabric_rebuild_pulled_bytes",
    )
)
"""All the sampler reads of each node's /metrics: asking for only these keeps a sample
of a thousand-node cluster from rendering every node's view of every other node."""


class Sampler:
    def __init__(
        self, client: ClusterApi, node_clients: Mapping[str, ClusterApi], clock: RunClock
    ) -> None:
        self.client = client
        self.node_clients = node_clients
        self.clock = clock
        self.samples: list[Sample] = []
        self.raw: list[dict[str, Any]] = []
        self.last_view: dict[str, Any] | None = None

    async def run(self, interval_s: float = 1.0) -> None:
        """Sample every ``interval_s`` until cancelled."""
        due = self.clock.now()
        while True:
            await self.sample()
            due += interval_s
            await asyncio.sleep(max(0.0, due - self.clock.now()))

    async def sample(self) -> Sample:
        t = self.clock.now()
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT_S):
                view, rebuild, metrics = await self._ask()
        except Exception as exc:  # any failure of the cluster is a missing sample
            s = Sample(t=round(t, 3), ok=False)
            self.raw.append({"t": s.t, "ok": False, "error": str(exc) or type(exc).__name__})
        else:
            self.last_view = view
            s = to_sample(t, view, rebuild, metrics)
            raw = {"t": s.t, "ok": True, "view": view, "rebuild": rebuild}
            self.raw.append({**raw, "repairs": repair_counts(metrics)})
        self.samples.append(s)
        return s

    async def _ask(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        view, rebuild, *texts = await asyncio.gather(
            self.client.cluster(),
            self.client.rebuild(),
            *(self._metrics(c) for c in self.node_clients.values()),
        )
        return view, rebuild, dict(zip(self.node_clients, texts, strict=True))

    @staticmethod
    async def _metrics(client: ClusterApi) -> str:
        try:
            return await client.metrics_text(SERIES)
        except Exception:  # a node that is down has no numbers this second
            return ""


def repair_counts(metrics: dict[str, str]) -> dict[str, int]:
    """``{"read": n, "scrub": n}`` over every node that answered (cumulative counters)."""
    out = {"read": 0, "scrub": 0}
    for text in metrics.values():
        for name, _node, value in REPAIRS.findall(text):
            out["read" if name == "fabric_replica_repairs" else "scrub"] += int(float(value))
    return out


def to_sample(
    t: float, view: dict[str, Any], rebuild: dict[str, Any], metrics: dict[str, str]
) -> Sample:
    nodes = view.get("nodes", [])
    containers = {c["name"]: c for c in view.get("containers", [])}
    progress = rebuild.get("containers", []) or list(containers.values())
    reduced_bytes = sum(int(c.get("reduced_resiliency_bytes") or 0) for c in progress)
    resiliencies = [int(c["resiliency"]) for c in progress if c.get("resiliency") is not None]
    lost = any(
        c.get("resiliency") is not None
        and c["resiliency"] < containers.get(c["name"], {}).get("rf", 1) - 1
        for c in progress
    )
    copied: dict[str, int] = {}
    pulled: dict[str, int] = {}
    degraded = 0
    for text in metrics.values():
        for target, source, value in PULLED.findall(text):
            pulled[f"{source}>{target}"] = int(float(value))
        for name, node, value in METRIC.findall(text):
            if name == "fabric_rebuild_copied_bytes":
                copied[node] = int(float(value))
            else:
                degraded += int(float(value))
    usage = view.get("usage", {})
    return Sample(
        t=round(t, 3),
        leader=view.get("leader"),
        nodes_up=sum(1 for n in nodes if n.get("state") == "UP"),
        nodes_total=len(nodes),
        resiliency=min(resiliencies) if resiliencies else None,
        reduced=lost or reduced_bytes > 0,
        reduced_resiliency_bytes=reduced_bytes,
        rebuilt_bytes=sum(int(c.get("rebuilt_bytes") or 0) for c in progress),
        copied_by_node=copied,
        pulled_by_link=pulled,
        degraded_reads=degraded,
        usage={k: v for k, v in usage.items() if isinstance(v, int | float)},
    )
