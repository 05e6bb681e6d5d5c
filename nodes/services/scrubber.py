"""Scrubbing: every node re-reads and verifies the extent groups it holds, forever.

Theory of operation
-------------------
A pass reads every group file of this node, a window at a time (cut at extent
boundaries, as a rebuild copy is), at ``bytes_per_s`` (the ``[scrub]`` settings: the
config's, or ``fabric scrub``'s), and checks each live extent against its checksum.
So a bit flip at rest is found within one pass whether or not a client ever reads it.
A bad extent is mended at once from a good copy: another replica, or for an
erasure-coded group (one copy) its strip. Every finding and repair goes to the event
log and ``/metrics``; a pass ends with a ``scrub_cycle`` event, which is also how a
restarted node knows when its last pass ended: the next one starts ``cycle_s`` after
it. ``fabric scrub --now`` (``ScrubSettings.run_now`` raised) starts one at once.

Only the extents the metadata calls live are data: dead space and a writer's
uncommitted tail are not checked. A group that disappears mid-pass (collected, moved)
is skipped.

A parity group has no checksum of its own: each window of it is compared with parity
encoded afresh from the strip's data members, read for the purpose. It is rewritten
only when every live extent those data windows hold passed its checksum (never from
data that may itself be bad: a bad data extent is its own holder's to mend, and the
parity is checked again next pass).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fabric import limits, traffic
from fabric.buggify import OFF as buggify_off
from fabric.buggify import Buggify
from fabric.config import ClusterConfig
from fabric.errors import FabricError, NotFound, Unavailable
from fabric.extents import codec, erasure
from fabric.metadata import healing
from fabric.metadata.records import EgroupRecord, ExtentRecord, ScrubSettings, StripRecord
from fabric.ports import Clock, Offload, PeerUnreachable
from fabric.wire.messages import (
    EgroupStat,
    ExtentCheck,
    ReadExtent,
    RepairExtent,
    StatEgroup,
)
from nodes.services.copier import windows
from nodes.services.events import EventLog
from nodes.services.metadata import MetadataService
from nodes.services.replicas import ReplicaClient
from nodes.services.storage import StorageService
from nodes.services.strips import StripReader, layout_of, window_chunks

log = logging.getLogger(__name__)

MAX_FINDINGS_PER_PASS = 200
"""Events one pass records about single extents (a rotten disk must not flood the log);
the pass's summary counts them all."""


@dataclass
class ScrubStats:
    passes: int = 0
    bytes_scrubbed: int = 0
    groups_scrubbed: int = 0
    errors_found: int = 0
    repaired: int = 0
    unrepaired: int = 0
    last_pass_end_wall: float = 0.0


@dataclass
class _Pass:
    started: float
    groups: int = 0
    bytes: int = 0
    errors: int = 0
    repaired: int = 0
    events: int = 0


class Scrubber:
    def __init__(
        self,
        node_id: str,
        config: ClusterConfig,
        clock: Clock,
        metadata: MetadataService,
        storage: StorageService,
        replicas: ReplicaClient,
        strips: StripReader,
        events: EventLog,
        offload: Offload,
        buggify: Buggify = buggify_off,
    ) -> None:
        self.node_id = node_id
        self.buggify = buggify
        self.config = config
        self.clock = clock
        self.metadata = metadata
        self.storage = storage
        self.replicas = replicas
        self.strips = strips
        self.events = events
        self.offload = offload
        self.stats = ScrubStats()
        self._run_now_seen: int | None = None
        self._paced_until = 0.0

    def settings(self) -> ScrubSettings:
        return healing.effective_scrub(self.metadata.state, self.config.scrub)

    async def run_forever(self) -> None:
        await self.metadata.read_index()
        self.stats.last_pass_end_wall = self._last_pass_end()
        self._run_now_seen = self.settings().run_now
        while True:
            settings = self.settings()
            asked = settings.run_now != self._run_now_seen
            due = self.clock.wall() >= self.stats.last_pass_end_wall + settings.cycle_s
            if asked or due:
                self._run_now_seen = settings.run_now
                await self.scrub_pass()
            else:
                await self.clock.sleep(1.0 * self.config.timeouts.background_scale)

    def _last_pass_end(self) -> float:
        """When this node's last recorded pass ended (0: never)."""
        for event in reversed(healing.latest_events(self.metadata.state, limits.EVENTS_KEPT)):
            if event.kind == "scrub_cycle" and event.node == self.node_id:
                return event.at_wall
        return 0.0

    async def scrub_pass(self) -> None:
        run = _Pass(self.clock.now())
        for egid in self.storage.egroups():
            try:
                await self._scrub_group(egid, run)
            except (NotFound, PeerUnreachable, FabricError) as exc:
                log.info("scrub of %s skipped: %s", egid, exc)
        took = self.clock.now() - run.started
        self.stats.last_pass_end_wall = self.clock.wall()
        if not run.groups:
            self.stats.passes += 1
            return  # nothing held, nothing to remember: no event for an empty node
        severity = "info" if run.errors == run.repaired else "error"
        await self.events.record(
            "scrub_cycle",
            self.node_id,
            f"{self.node_id} scrubbed {run.groups} extent groups ({run.bytes} bytes) in "
            f"{took:.1f} s: {run.errors} bad extents, {run.repaired} repaired",
            severity,
        )
        self.stats.passes += 1

    async def _scrub_group(self, egid: str, run: _Pass) -> None:
        eg = self.metadata.state.egroup(egid)
        if eg is None or self.node_id not in eg.replicas:
            return  # garbage for the sweeper
        if eg.parity:
            await self._scrub_parity(eg, run)
            return
        live = self.metadata.state.extents_in(egid)
        if not live:
            return
        stat = await self.storage.handle(StatEgroup(egid))
        assert isinstance(stat, EgroupStat)
        by_offset = {e.offset: e for _, e in live}
        checks = tuple(ExtentCheck(e.offset, e.stored_len, e.checksum) for e in by_offset.values())
        for start, end in windows(stat.size, checks, limits.REBUILD_WINDOW_BYTES):
            await self._pace(end - start)
            reply = await self.storage.read(ReadExtent(egid, start, min(end, stat.size) - start))
            data = reply.data
            run.bytes += len(data)
            self.stats.bytes_scrubbed += len(data)
            for c in checks:
                if not start <= c.offset < end:
                    continue
                at = c.offset - start
                bad = codec.checksum(data[at : at + c.length]) != c.checksum
                if bad or self.buggify.fires("scrub.false-alarm"):
                    await self._found(eg, by_offset[c.offset], run)
        run.groups += 1
        self.stats.groups_scrubbed += 1

    async def _scrub_parity(self, eg: EgroupRecord, run: _Pass) -> None:
        strip = self.metadata.state.strip(eg.strip)
        if strip is None:
            return
        lay = layout_of(strip)
        want = [m.egid for m in strip.members].index(eg.egid) - strip.k
        record = lay.parity_record_bytes
        chunks = strip.length // lay.chunk_bytes
        per = window_chunks(lay)
        for c0 in range(0, chunks, per):
            n = min(per, chunks - c0)
            await self._pace(n * record)
            reply = await self.storage.read(ReadExtent(eg.egid, c0 * record, n * record))
            run.bytes += len(reply.data)
            self.stats.bytes_scrubbed += len(reply.data)
            expected = await self._parity_from_data(strip, lay, want, c0, n)
            if expected is None or expected == reply.data:
                continue
            run.errors += 1
            self.stats.errors_found += 1
            await self.storage.repair(RepairExtent(eg.egid, c0 * record, expected))
            run.repaired += 1
            self.stats.repaired += 1
            await self._report(
                run,
                "scrub_repaired",
                eg.egid,
                f"parity {eg.egid} of strip {strip.id} on {self.node_id} differed from its "
                f"data at chunk {c0}; rewritten from the data",
            )
        run.groups += 1
        self.stats.groups_scrubbed += 1

    async def _parity_from_data(
        self, strip: StripRecord, lay: erasure.Layout, want: int, c0: int, n: int
    ) -> bytes | None:
        """Parity member ``want``'s records for chunks ``c0 .. c0 + n - 1``, encoded from
        the data members; None when some data could not be read or failed a checksum."""
        start, end = c0 * lay.chunk_bytes, (c0 + n) * lay.chunk_bytes
        columns: list[bytes] = []
        for member in strip.data:
            try:
                column = await self.strips.chunk(member.egid, member.node, start, end - start)
                for _, ext in self.metadata.state.extents_in(member.egid):
                    if ext.offset + ext.stored_len <= start or ext.offset >= end:
                        continue
                    if start <= ext.offset and ext.offset + ext.stored_len <= end:
                        at = ext.offset - start
                        stored = column[at : at + ext.stored_len]
                    else:  # it spans the window's edge: read it whole to check it
                        stored = await self.strips.chunk(
                            member.egid, member.node, ext.offset, ext.stored_len
                        )
                    if codec.checksum(stored) != ext.checksum:
                        return None
            except (PeerUnreachable, FabricError):
                return None
            columns.append(column)
        records: list[list[bytes]] = await self.offload(erasure.encode_window, lay, columns, n)
        return b"".join(records[want])

    async def _pace(self, nbytes: int) -> None:
        """Keep reads at ``bytes_per_s`` on average (0: no limit)."""
        rate = self.settings().bytes_per_s
        if not rate:
            return
        now = self.clock.now()
        self._paced_until = max(self._paced_until, now) + nbytes / rate
        if self._paced_until > now:
            await self.clock.sleep(self._paced_until - now)

    async def _found(self, eg: EgroupRecord, ext: ExtentRecord, run: _Pass) -> None:
        run.errors += 1
        self.stats.errors_found += 1
        where = f"extent at {ext.offset} (+{ext.stored_len}) of {eg.egid} on {self.node_id}"
        try:
            source = await self._mend(eg, ext)
        except (PeerUnreachable, FabricError) as exc:
            self.stats.unrepaired += 1
            await self._report(run, "scrub_error", eg.egid, f"{where} is bad: {exc}", "error")
            return
        run.repaired += 1
        self.stats.repaired += 1
        await self._report(
            run, "scrub_repaired", eg.egid, f"{where} failed its checksum; repaired from {source}"
        )

    async def _report(
        self, run: _Pass, kind: str, subject: str, message: str, severity: str = "warning"
    ) -> None:
        if run.events >= MAX_FINDINGS_PER_PASS:
            log.warning("scrub: %s", message)
            return
        run.events += 1
        await self.events.record(kind, subject, message, severity)

    async def _mend(self, eg: EgroupRecord, ext: ExtentRecord) -> str:
        """Rewrite this node's copy of ``ext`` with good bytes; where they came from."""
        with traffic.tagged("repair"):
            good, source = await self._good_copy(eg, ext)
        await self.storage.repair(RepairExtent(eg.egid, ext.offset, good))
        return source

    async def _good_copy(self, eg: EgroupRecord, ext: ExtentRecord) -> tuple[bytes, str]:
        others = [n for n in eg.replicas if n != self.node_id]
        try:
            good, node, _ = await self.replicas.good_copy(
                eg.egid, ext.offset, ext.stored_len, ext.checksum, others
            )
            return good, f"the copy on {node}"
        except Unavailable as exc:
            if not eg.strip:
                raise
            why = str(exc)
        self.strips.forget(eg)  # a window cached before the flip was found is suspect
        data = await self.strips.read_degraded(eg, ext.offset, ext.stored_len)
        if codec.checksum(data) == ext.checksum:
            return data, f"strip {eg.strip}"
        raise Unavailable(f"{why}; strip {eg.strip}: rebuilt bytes fail the checksum")
