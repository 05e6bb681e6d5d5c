"""Recording events in the cluster's event log (``fabric.metadata.healing``).

An event is a small metadata command, so every node sees the same log in the same
order and it survives any node. Recording one never fails the work that reports it:
with no leader to take it, the event is logged locally and dropped.
"""

from __future__ import annotations

import logging

from fabric.errors import FabricError
from fabric.metadata.commands import RecordEvents
from fabric.metadata.records import EventRecord
from fabric.ports import Clock, PeerUnreachable
from nodes.services.metadata import MetadataService

log = logging.getLogger(__name__)


class EventLog:
    def __init__(self, node_id: str, clock: Clock, metadata: MetadataService) -> None:
        self.node_id = node_id
        self.clock = clock
        self.metadata = metadata
        self.dropped = 0

    def event(
        self, kind: str, subject: str, message: str, severity: str = "info", node: str = ""
    ) -> EventRecord:
        return EventRecord(
            0, self.clock.wall(), kind, node or self.node_id, subject, message, severity
        )

    async def record(
        self, kind: str, subject: str, message: str, severity: str = "info", node: str = ""
    ) -> None:
        await self.record_all([self.event(kind, subject, message, severity, node)])

    async def record_all(self, events: list[EventRecord]) -> None:
        if not events:
            return
        level = logging.WARNING if any(e.severity != "info" for e in events) else logging.INFO
        for e in events:
            log.log(level, "event %s: %s", e.kind, e.message)
        try:
            result = await self.metadata.propose(RecordEvents(tuple(events)))
        except (FabricError, PeerUnreachable) as exc:
            self.dropped += len(events)
            log.warning("events not recorded (%s): %s", exc, [e.message for e in events])
            return
        if not result.ok:
            self.dropped += len(events)
            log.warning("events refused: %s", result.message)
