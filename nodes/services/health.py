"""Node health: every node reports to the leader; the leader decides UP/DEGRADED/DOWN.

Every node sends a ``NodeReport`` to the leader each ``node_heartbeat_ms``. The leader
keeps the time it last heard from each node (in memory: it changes constantly): its
last report, or its last answer to a Raft append or heartbeat, whichever is later (a
report adds what the node says of itself: out of service, its disks). When the age
crosses ``degraded_after_ms`` or ``down_after_ms``, it commits a
``SetNodeState`` so the transition is in the replicated metadata and every node sees
the same states. A new leader starts every node's clock at its election, so a failover
does not declare the whole cluster DOWN; that grace is no sign of life, though: a node the
old leader called DEGRADED or DOWN stays so until the new one hears from it.

A node that reports itself out of service (a bug stopped it, its Raft log cannot be
written, every disk failed) is DEGRADED; once it says it has been out for
``down_after_ms`` (by its own clock, so a new leader knows too) it is DOWN like a silent
one, and the cluster rebuilds what it held instead of waiting for it forever. It is UP
again once it reports so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from fabric import limits
from fabric.config import ClusterConfig
from fabric.errors import FabricError, Unavailable
from fabric.metadata.commands import SetNodeState
from fabric.ports import Clock, PeerUnreachable, Transport
from fabric.wire.messages import Ack, NodeReport
from nodes.services.metadata import MetadataService

log = logging.getLogger(__name__)

_RANK = {"DOWN": 0, "DEGRADED": 1, "UP": 2}


class HealthService:
    def __init__(
        self,
        node_id: str,
        config: ClusterConfig,
        clock: Clock,
        transport: Transport,
        metadata: MetadataService,
        local_report: Callable[[], Awaitable[tuple[str, dict[str, Any]]]],
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.clock = clock
        self.transport = transport
        self.metadata = metadata
        self.local_report = local_report
        self.last_seen: dict[str, float] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self._led_since_term: int | None = None
        self._led_since = -math.inf
        """When this node last became leader (its grace for every node starts then)."""
        self._reported_at: dict[str, float] = {}
        """node -> when its last report reached this leader (the grace does not count)."""

    async def _report(self) -> NodeReport:
        state, detail = await self.local_report()
        return NodeReport(self.node_id, state, detail)

    async def report_forever(self) -> None:
        every_s = self.config.timeouts.node_heartbeat_ms / 1000
        while True:
            report = await self._report()
            try:
                await self._send(report, every_s * 3)
            except (PeerUnreachable, FabricError) as exc:
                # Leadership moved, or the leader is gone or busy: the next report goes
                # to whoever leads then. Giving up here would leave a live node DOWN.
                log.debug("node report not delivered: %s", exc)
            await self.clock.sleep(every_s)

    async def _send(self, report: NodeReport, timeout_s: float) -> None:
        # The leader is looked up only now that the report is built: building it waits
        # on the disks, and leadership may have moved meanwhile.
        leader = self.metadata.leader
        if leader == self.node_id:
            self.receive(report)
        elif leader is not None:
            await self.transport.call(leader, report, timeout_s)

    def receive(self, report: NodeReport) -> Ack:
        if not self.metadata.is_leader:
            raise Unavailable(f"{self.node_id} is not the leader")
        now = self.clock.now()
        self.last_seen[report.node_id] = now
        self._reported_at[report.node_id] = now
        self.reports[report.node_id] = {"state": report.state, **report.detail}
        return Ack()

    def _heard_since_leading(self, node_id: str) -> bool:
        heard = max(
            self._reported_at.get(node_id, -math.inf),
            self.metadata.heard.get(node_id, -math.inf),
        )
        return heard >= self._led_since

    def desired_state(self, node_id: str, now: float) -> tuple[str, str]:
        t = self.config.timeouts
        # A Raft answer is as good a sign of life as a report; the report adds what the
        # node says of itself (out of service, its disks).
        seen = max(self.last_seen.get(node_id, now), self.metadata.heard.get(node_id, -math.inf))
        age_ms = (now - seen) * 1000
        if age_ms >= t.down_after_ms:
            return "DOWN", f"no report or Raft answer for {age_ms / 1000:.1f} s"
        if age_ms >= t.degraded_after_ms:
            return "DEGRADED", f"no report or Raft answer for {age_ms / 1000:.1f} s"
        report = self.reports.get(node_id, {})
        reason = report.get("reason", "")
        out_s = report.get("out_of_service_s", 0.0)  # by the node's own clock
        if out_s * 1000 >= t.down_after_ms:
            return "DOWN", f"{reason} (out of service for {out_s:.1f} s)"
        return report.get("state", "UP"), reason

    async def monitor_forever(self) -> None:
        while True:
            await self.clock.sleep(
                limits.HEALTH_MONITOR_EVERY_S * self.config.timeouts.background_scale
            )
            if not self.metadata.is_leader:
                self._led_since_term = None
                await self.metadata.until_leader()
                continue
            term = self.metadata.raft.term if self.metadata.raft else 0
            if self._led_since_term != term:
                # A new leader has no history: give every node a full grace period.
                self._led_since_term = term
                now = self.clock.now()
                self._led_since = now
                self.last_seen = {n: now for n in self.metadata.state.nodes()}
            await self._commit_transitions()

    async def _commit_transitions(self) -> None:
        now = self.clock.now()
        for node_id, record in self.metadata.state.nodes().items():
            state, reason = self.desired_state(node_id, now)
            if state == record.state:
                continue
            better = _RANK[state] > _RANK.get(record.state, 0)
            if better and not self._heard_since_leading(node_id):
                continue  # only our grace says so: no sign of life yet
            log.info("node %s: %s -> %s (%s)", node_id, record.state, state, reason)
            try:
                await self.metadata.propose(SetNodeState(node_id, state, self.clock.wall(), reason))
            except FabricError as exc:
                log.warning("could not record node %s as %s: %s", node_id, state, exc)
                return
