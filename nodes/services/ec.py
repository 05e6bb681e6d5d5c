"""Erasure coding of cold extent groups (EC-X style): conversion, packing, rebuild.

Theory of operation
-------------------
Data lands as RF replicas. For a container with ``ec = k+m``, the leader's scanner
calls ``scan`` on every pass, which does one of these, in this order of priority:

1. **rebuild** a strip member (data or parity group) whose node is DOWN: each window is
   recomputed from ``k`` survivors onto a node in a fault domain the strip does not use,
   then ``MoveStripMember`` points metadata at it;
2. **collect** a strip whose data groups no longer hold a live extent;
3. **convert** (up to ``limits.EC_STRIPS_PER_PASS`` strips): pick ``k`` sealed groups that
   stayed unchanged for ``ec_delay_s``, one replica of each in ``k`` distinct fault
   domains, and ``m`` parity nodes in further domains; then, a window of chunks at a
   time, read the ``k`` copies (the next window is read while this one is encoded and
   its parity appended), check every live extent against its checksum on the bytes
   read, encode in a worker thread and append the parity, durably; commit
   ``CommitStrip``; only then delete the surplus data replicas. An extent that fails
   its checksum is repaired from another replica and the strip is abandoned, to be
   made again on a later pass from the mended copy;
4. **pack** the tail: when every group of the container still replicated is cold and
   they are too few to make a strip of ``k`` (the end of a write, a small container),
   and have been for ``limits.EC_TAIL_QUIET_S`` more, their live extents are copied
   back to back into ``k`` new single-copy groups of about equal size on ``k`` distinct
   domains (fewer when there are fewer extents), parity is written beside them, and
   one ``CommitPackedStrip`` moves the extents and records the strip. The emptied
   groups are then collected by the scanner like any empty group. So every cold byte
   ends at ``(k + m) / k``, plus pyeclib's headers and, per parity member, at most one
   chunk of rounding and one extent of imbalance; a pack that would not save space is
   not made.

A crash before a commit leaves the groups replicated as they were (the new files are
claimed under the strip id, and the claim's expiry collects them); a crash after it
leaves at most surplus copies, which their nodes sweep. Reads of EC'd groups, degraded
reads and member rebuilds do not care how a strip was made: a packed strip is a strip.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fabric import limits
from fabric.buggify import OFF as buggify_off
from fabric.buggify import Buggify
from fabric.errors import FabricError, Unavailable
from fabric.extents import codec, erasure
from fabric.extents.policy import ContainerPolicy
from fabric.metadata import healing, keys
from fabric.metadata.commands import (
    CommitPackedStrip,
    CommitStrip,
    DropIntent,
    DropStrip,
    Move,
    MoveStripMember,
    PackedExtent,
)
from fabric.metadata.records import (
    EgroupIntent,
    EgroupRecord,
    ExtentRecord,
    StripMember,
    StripRecord,
)
from fabric.metadata.state import MetadataState
from fabric.placement.rendezvous import NotEnoughDomains, place
from fabric.placement.strips import match_groups, pack_extents
from fabric.ports import Clock, Offload, PeerUnreachable
from fabric.wire.messages import AppendExtents, AppendReply, DeleteEgroupFiles, RepairExtent
from nodes.services.catalog import Catalog
from nodes.services.inflight import GroupsInFlight
from nodes.services.metadata import MetadataService
from nodes.services.quiet import QuietClock
from nodes.services.reader import ReadCoordinator
from nodes.services.replicas import ReplicaClient
from nodes.services.strips import StripReader, layout_of, window_chunks

log = logging.getLogger(__name__)


def rebuild_suspects(state: MetadataState) -> list[StripRecord]:
    """Strips with a member on a node that is not UP or is draining, or lost with its
    disk: only these can need a rebuild."""
    up = state.up_nodes() - healing.draining_nodes(state)
    ids = {s for node, held in state.idx.strips_on.items() if node not in up for s in held}
    ids |= {eg.strip for eg in state.egroups(sorted(state.idx.short_egroups)) if eg.strip}
    found = (state.strip(i) for i in sorted(ids))
    return [strip for strip in found if strip is not None]


@dataclass
class EcStats:
    strips_converted: int = 0
    strips_packed: int = 0
    strips_rolled_back: int = 0
    members_rebuilt: int = 0
    strips_collected: int = 0
    converted_bytes: int = 0
    convert_seconds: float = 0.0
    """Time spent in conversions and packs that wrote a strip (committed or rolled back)."""
    copies_made: int = 0
    extents_repaired: int = 0


@dataclass
class _Column:
    """A data member of a strip being made: its group, the node whose copy is kept, and
    the live extents of it not yet checked against the bytes read from that copy."""

    egid: str
    node: str
    pending: deque[ExtentRecord]
    """Sorted by offset."""
    tail: bytes = b""
    """The bytes read so far from ``tail_at`` on: the start of an extent cut by a window."""
    tail_at: int = 0

    @property
    def end(self) -> int:
        return max((e.offset + e.stored_len for e in self.pending), default=0)

    def checks(self, start: int, window: bytes) -> list[tuple[ExtentRecord, tuple[Any, ...]]]:
        """Extents that end within the bytes read once ``window`` (read from ``start``)
        is added, each with its bytes in one or two pieces."""
        stop = start + len(window)
        view = memoryview(window)
        out: list[tuple[ExtentRecord, tuple[Any, ...]]] = []
        while self.pending and self.pending[0].offset + self.pending[0].stored_len <= stop:
            e = self.pending.popleft()
            lo, hi = e.offset, e.offset + e.stored_len
            if lo >= start:
                out.append((e, (view[lo - start : hi - start],)))
            else:
                out.append((e, (memoryview(self.tail)[lo - self.tail_at :], view[: hi - start])))
        if self.pending and self.pending[0].offset < stop:
            lo = self.pending[0].offset
            kept = self.tail[lo - self.tail_at :] if lo < start else b""
            self.tail, self.tail_at = kept + bytes(view[max(lo, start) - start :]), lo
        else:
            self.tail, self.tail_at = b"", stop
        return out


def _window_job(
    lay: erasure.Layout,
    columns: list[bytes],
    checks: list[tuple[ExtentRecord, tuple[Any, ...]]],
    chunks: int,
) -> tuple[list[ExtentRecord], list[list[bytes]]]:
    """Off the event loop: the extents that fail their checksum, else the window's parity."""
    bad = [e for e, pieces in checks if codec.checksum_parts(pieces) != e.checksum]
    if bad:
        return bad, []
    return [], erasure.encode_window(lay, columns, chunks)


@dataclass
class _Bin:
    """A data member of a packed strip: the extents copied into it, back to back."""

    member: StripMember
    extents: list[tuple[str, ExtentRecord, int]]
    """(extent id, record, offset in this member), in order."""
    next: int = 0
    """Index of the first extent not yet read."""
    buffered: bytes = b""
    """Bytes of this member from ``buffered_at`` that the next window starts with."""
    buffered_at: int = 0
    moves: list[PackedExtent] = field(default_factory=list)

    @property
    def length(self) -> int:
        if not self.extents:
            return 0
        _, ext, at = self.extents[-1]
        return at + ext.stored_len


async def _drop(fut: asyncio.Future[Any] | None) -> None:
    """Cancel a helper task nobody will wait for, and swallow what it ends with."""
    if fut is None:
        return
    if not fut.done():
        fut.cancel()
    await asyncio.wait({fut})
    if not fut.cancelled():
        fut.exception()


class EcService:
    def __init__(
        self,
        node_id: str,
        clock: Clock,
        rng: Any,
        metadata: MetadataService,
        catalog: Catalog,
        replicas: ReplicaClient,
        reader: ReadCoordinator,
        strips: StripReader,
        offload: Offload,
        inflight: GroupsInFlight,
        buggify: Buggify = buggify_off,
    ) -> None:
        self.node_id = node_id
        self.buggify = buggify
        self.clock = clock
        self.rng = rng
        self.metadata = metadata
        self.catalog = catalog
        self.replicas = replicas
        self.reader = reader
        self.strips = strips
        self.offload = offload
        self.inflight = inflight
        self.stats = EcStats()
        self._quiet: dict[str, QuietClock] = {}
        """Per container: how long each of its sealed groups has stayed unchanged."""
        self.backend = erasure.backend()

    # --- helpers ----------------------------------------------------------------------------
    async def _call(self, node: str, msg: Any) -> Any:
        return await self.replicas.call_storage(node, msg)

    async def _append(self, node: str, egid: str, payloads: Sequence[bytes], at: int) -> None:
        """Append ``payloads`` to ``egid`` on ``node`` (one fsync), which must land at ``at``."""
        reply = await self._call(node, AppendExtents(egid, tuple(payloads), at))
        assert isinstance(reply, AppendReply)
        if reply.offsets and reply.offsets[0] != at:
            raise Unavailable(f"{egid} on {node}: appended at {reply.offsets[0]}, not {at}")

    # --- the scanner's entry point ----------------------------------------------------------
    async def scan(self) -> None:
        state = self.metadata.state
        settings = healing.effective_rebuild(state, self.catalog.config.rebuild)
        # A draining node's members move too (it is UP: they are recomputed elsewhere).
        gone = healing.lost_nodes(state, settings, self.clock.wall())
        gone |= healing.draining_nodes(state)
        for strip in rebuild_suspects(state):
            lost = [m for m in strip.members if m.node in gone or self._lost_with_disk(m)]
            if lost and len(lost) <= strip.m:
                await self._rebuild(strip, lost[0].egid, lost[0].node)
                return
        for strip_id in sorted(state.idx.empty_strips):
            empty = state.strip(strip_id)
            if empty is not None and len(state.egroups(m.egid for m in empty.data)) == empty.k:
                await self._collect(empty)
                return
        for container in state.containers():
            if not container.policy.ec_k:
                continue
            # Convert while there is cold data, up to a bound so a pass stays short; what
            # is left when no strip of k can be made any more is the tail, to pack.
            name, policy = container.name, container.policy
            if await self._timed(self._convert_some(name, policy)) < limits.EC_STRIPS_PER_PASS:
                await self._timed(self._pack(name, policy))

    def _lost_with_disk(self, member: StripMember) -> bool:
        eg = self.metadata.state.egroup(member.egid)
        return eg is not None and not eg.replicas

    async def _timed(self, work: Awaitable[int]) -> int:
        """``work``'s result; its time counts as converting if it wrote a strip."""
        started, attempts = self.clock.now(), self.stats.strips_rolled_back
        done = await work
        if done or self.stats.strips_rolled_back != attempts:
            self.stats.convert_seconds += self.clock.now() - started
        return done

    async def _convert_some(self, container: str, policy: ContainerPolicy) -> int:
        """Strips converted, ``EC_CONVERSIONS_IN_FLIGHT`` at a time (one's reads overlap
        another's encoding, commit and deletes), until no more can be made or
        ``EC_STRIPS_PER_PASS`` were tried."""
        busy: set[str] = set()
        running: set[asyncio.Task[bool]] = set()
        tried = converted = 0
        failed = False
        try:
            while tried < limits.EC_STRIPS_PER_PASS and not failed:
                plan = self._plan(container, policy, busy)
                if plan is None:
                    break
                busy.update(eg.egid for eg, _ in plan[0])
                running.add(asyncio.ensure_future(self._convert_held(container, policy, plan)))
                tried += 1
                if len(running) >= limits.EC_CONVERSIONS_IN_FLIGHT:
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    finished = [t.result() for t in done]
                    converted += sum(finished)
                    failed = not all(finished)  # try again on a later pass
        except BaseException:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        ends: list[bool | BaseException] = await asyncio.gather(*running, return_exceptions=True)
        for result in ends:
            if isinstance(result, BaseException):
                raise result
            converted += result
        return converted

    # --- conversion -------------------------------------------------------------------------
    def _cold_groups(self, container: str, delay_s: float) -> list[EgroupRecord]:
        now = self.clock.now()
        state = self.metadata.state
        pending = state.egroups(state.idx.ec_pending.get(container, ()))
        candidates = [
            eg for eg in pending if eg.sealed and not self.inflight.held_by_other(eg.egid, "ec")
        ]
        quiet = self._quiet.setdefault(container, QuietClock())
        quiet.keep_only(eg.egid for eg in candidates)
        out = [
            eg
            for eg in candidates
            if quiet.quiet_for(eg.egid, state.version(keys.egroup_key(eg.egid)), now) >= delay_s
        ]
        out.sort(key=lambda eg: (-eg.size, eg.egid))
        return out

    def _plan(
        self, container: str, policy: ContainerPolicy, busy: set[str]
    ) -> tuple[list[tuple[EgroupRecord, str]], list[str]] | None:
        """``k`` cold groups not ``busy`` in another conversion, the node whose copy each
        keeps, and ``m`` parity nodes; None if no strip can be made now."""
        domains = self.catalog.fault_domains()
        up = self.metadata.state.up_nodes()
        cold = {
            eg.egid: eg
            for eg in self._cold_groups(container, policy.ec_delay_s)
            if eg.egid not in busy
        }
        # A group keeps one of its own replicas when it can; failing that, its bytes are
        # copied to another node (listed last, so a matching uses copies only if needed).
        options = []
        for egid, eg in cold.items():
            own = [n for n in sorted(eg.replicas) if n in up and n in domains]
            if not own:
                continue
            others = [n for n in sorted(up) if n in domains and n not in eg.replicas]
            options.append((egid, [(n, domains[n]) for n in own + others]))
        matched = match_groups(options, policy.ec_k)
        if matched is None:
            return None
        chosen = [(cold[egid], node) for egid, node in matched]
        used = {domains[node] for _, node in chosen}
        try:
            candidates = self.catalog.candidates(excluded_domains=used)
            parity = place(chosen[0][0].egid, candidates, policy.ec_m)
        except NotEnoughDomains:
            return None
        return chosen, parity

    def _columns(self, chosen: list[tuple[EgroupRecord, str]]) -> list[_Column]:
        state = self.metadata.state
        return [
            _Column(
                eg.egid,
                node,
                deque(sorted((e for _, e in state.extents_in(eg.egid)), key=lambda e: e.offset)),
            )
            for eg, node in chosen
        ]

    async def _convert_held(
        self,
        container: str,
        policy: ContainerPolicy,
        plan: tuple[list[tuple[EgroupRecord, str]], list[str]],
    ) -> bool:
        with self.inflight.hold((eg.egid for eg, _ in plan[0]), "ec"):
            return await self._convert(container, policy, plan)

    async def _convert(
        self,
        container: str,
        policy: ContainerPolicy,
        plan: tuple[list[tuple[EgroupRecord, str]], list[str]],
    ) -> bool:
        chosen, parity_nodes = plan
        columns = self._columns(chosen)
        lay = erasure.layout(policy.ec_k, policy.ec_m, limits.EC_CHUNK_BYTES)
        chunks = -(-max(col.end for col in columns) // lay.chunk_bytes)
        if chunks == 0:
            return False  # its extents died since: the groups are collected, not coded
        strip_id = f"st-{self.rng.getrandbits(48):012x}"
        parity = [StripMember(f"{strip_id}-p{j}", node) for j, node in enumerate(parity_nodes)]
        copies = [StripMember(eg.egid, node) for eg, node in chosen if node not in eg.replicas]
        # Claim the parity files and the copies before their first byte: if this leader
        # dies mid-conversion, the next one finds them claimed and collects them.
        await self.replicas.claim_files(
            EgroupIntent(strip_id, container, tuple(parity + copies), self.node_id)
        )
        try:
            for (eg, node), col in zip(chosen, columns, strict=True):
                if node not in eg.replicas:
                    await self._copy_group(eg, node, col.end)
            await self._encode(lay, columns, parity, chunks)
        except (PeerUnreachable, FabricError) as exc:
            log.warning("EC conversion abandoned: %s", exc)
            await self._roll_back(strip_id, [(p.egid, p.node) for p in parity + copies])
            return False
        if delay := self.buggify.delay_s("ec.slow-commit"):
            await self.clock.sleep(delay)
        cmd = CommitStrip(
            strip_id,
            container,
            lay.chunk_bytes,
            chunks * lay.chunk_bytes,
            tuple(StripMember(eg.egid, node) for eg, node in chosen),
            tuple(parity),
            chunks * lay.parity_record_bytes,
            claimed=True,
        )
        result = await self.metadata.propose(cmd)
        if not result.ok:
            log.info("strip %s not committed: %s", strip_id, result.message)
            await self._roll_back(strip_id, [(p.egid, p.node) for p in parity + copies])
            return False
        # Committed: the single copies plus parity carry the data. Drop the surplus.
        await self._delete_files(
            [(eg.egid, n) for eg, node in chosen for n in eg.replicas if n != node]
        )
        self.stats.strips_converted += 1
        self.stats.converted_bytes += sum(eg.size for eg, _ in chosen)
        log.info(
            "strip %s: %d data groups + %d parity on %s",
            strip_id,
            len(chosen),
            len(parity),
            ",".join(parity_nodes),
        )
        return True

    async def _encode(
        self,
        lay: erasure.Layout,
        columns: list[_Column],
        parity: list[StripMember],
        chunks: int,
    ) -> None:
        """Parity of ``chunks`` chunks of the columns, appended durably a window at a time;
        raises ``Unavailable`` (after repairing them) if extents fail their checksums."""
        per = window_chunks(lay)
        starts = list(range(0, chunks, per))

        def read(c0: int) -> asyncio.Future[list[bytes]]:
            size = min(per, chunks - c0) * lay.chunk_bytes
            return asyncio.ensure_future(
                asyncio.gather(
                    *(
                        self.strips.chunk(col.egid, col.node, c0 * lay.chunk_bytes, size)
                        for col in columns
                    )
                )
            )

        upcoming: asyncio.Future[list[bytes]] | None = read(0)
        appending: deque[asyncio.Future[Any]] = deque()
        try:
            for i, c0 in enumerate(starts):
                assert upcoming is not None
                data = await upcoming
                upcoming = read(starts[i + 1]) if i + 1 < len(starts) else None
                checks = [
                    check
                    for col, window in zip(columns, data, strict=True)
                    for check in col.checks(c0 * lay.chunk_bytes, window)
                ]
                n = min(per, chunks - c0)
                bad, records = await self.offload(_window_job, lay, data, checks, n)
                if bad:
                    await self._repair_columns(columns, bad)
                if len(appending) >= limits.EC_APPENDS_IN_FLIGHT:
                    await appending.popleft()
                # The parity nodes put appends in offset order and share their fsyncs.
                appending.append(
                    asyncio.gather(
                        *(
                            self._append(p.node, p.egid, recs, c0 * lay.parity_record_bytes)
                            for p, recs in zip(parity, records, strict=True)
                        )
                    )
                )
            while appending:
                await appending.popleft()
            short = [e for col in columns for e in col.pending]
            if short:
                await self._repair_columns(columns, short)
        finally:
            await _drop(upcoming)
            for fut in appending:
                await _drop(fut)

    async def _repair_columns(self, columns: list[_Column], bad: list[ExtentRecord]) -> None:
        """Mend the kept copies whose extents failed their checksum, and give up the strip."""
        where = {col.egid: col.node for col in columns}
        for ext in bad:
            good = await self.reader.read_stored(ext)
            await self._call(where[ext.egroup], RepairExtent(ext.egroup, ext.offset, good))
            self.stats.extents_repaired += 1
        raise Unavailable(f"{len(bad)} extents of kept copies failed their checksum (repaired)")

    async def _roll_back(self, strip_id: str, files: list[tuple[str, str]]) -> None:
        """Delete what an uncommitted strip wrote: parity, and data copies made for it."""
        await self._delete_files(files)
        self.stats.strips_rolled_back += 1
        try:
            await self.metadata.propose(DropIntent(strip_id))
        except FabricError as exc:
            log.info("claim %s stays until it expires: %s", strip_id, exc)

    async def _copy_group(self, eg: EgroupRecord, node: str, length: int) -> None:
        """Give ``node`` a copy of a group's first ``length`` bytes, so the strip's copies
        span domains (checked, like every kept copy, as it is encoded)."""
        await self._call(node, DeleteEgroupFiles(eg.egid))  # a leftover partial copy
        source = next(n for n in eg.replicas if n in self.metadata.state.up_nodes())
        for offset in range(0, length, limits.EC_WINDOW_BYTES):
            size = min(limits.EC_WINDOW_BYTES, length - offset)
            data = await self.strips.chunk(eg.egid, source, offset, size)
            await self._append(node, eg.egid, (data,), offset)
        self.stats.copies_made += 1

    async def _delete_files(self, files: list[tuple[str, str]]) -> None:
        """Delete the files on their nodes all at once; one that stays is the sweep's."""
        failed = await asyncio.gather(*(self.replicas.delete_files([f]) for f in files))
        for egid, node, why in (f for fs in failed for f in fs):
            log.info("%s on %s stays until the file sweep finds it: %s", egid, node, why)

    # --- packing the tail -------------------------------------------------------------------
    def _tail(self, container: str, policy: ContainerPolicy) -> list[EgroupRecord]:
        """The container's replicated groups, if they are all cold (for ``ec_delay_s`` plus
        ``EC_TAIL_QUIET_S``: the container stopped growing) and too few for a strip."""
        pending = self.metadata.state.idx.ec_pending.get(container, ())
        if not pending or len(pending) >= policy.ec_k:
            return []
        cold = self._cold_groups(container, policy.ec_delay_s + limits.EC_TAIL_QUIET_S)
        return cold if len(cold) == len(pending) else []

    def _pack_plan(
        self, container: str, policy: ContainerPolicy
    ) -> tuple[str, erasure.Layout, list[_Bin], list[StripMember]] | None:
        """``k`` bins of the tail's live extents (in group and offset order, for sequential
        reads), on ``k + m`` fault domains; None if that would not save space."""
        state = self.metadata.state
        tail = sorted(self._tail(container, policy), key=lambda eg: eg.egid)
        extents = [
            (extent_id, ext)
            for eg in tail
            for extent_id, ext in sorted(state.extents_in(eg.egid), key=lambda x: x[1].offset)
        ]
        k = min(policy.ec_k, len(extents))
        if k < 2:
            return None  # one extent cannot be split: it stays replicated
        runs = pack_extents([ext.stored_len for _, ext in extents], k)
        lay = erasure.layout(k, policy.ec_m, limits.EC_CHUNK_BYTES)
        longest = max(sum(extents[i][1].stored_len for i in run) for run in runs)
        parity_bytes = lay.m * -(-longest // lay.chunk_bytes) * lay.parity_record_bytes
        live = sum(ext.stored_len for _, ext in extents)
        if live + parity_bytes >= sum(eg.size * len(eg.replicas) for eg in tail):
            return None
        try:
            nodes = place(f"pack/{tail[0].egid}", self.catalog.candidates(), k + policy.ec_m)
        except NotEnoughDomains:
            return None
        strip_id = f"st-{self.rng.getrandbits(48):012x}"
        bins = []
        for j, run in enumerate(runs):
            at, placed = 0, []
            for i in run:
                extent_id, ext = extents[i]
                placed.append((extent_id, ext, at))
                at += ext.stored_len
            bins.append(_Bin(StripMember(f"{strip_id}-d{j}", nodes[j]), placed))
        parity = [StripMember(f"{strip_id}-p{j}", n) for j, n in enumerate(nodes[k:])]
        return strip_id, lay, bins, parity

    async def _pack(self, container: str, policy: ContainerPolicy) -> int:
        tail = self.metadata.state.idx.ec_pending.get(container, set())
        with self.inflight.hold(sorted(tail), "ec"):
            return await self._pack_held(container, policy)

    async def _pack_held(self, container: str, policy: ContainerPolicy) -> int:
        plan = self._pack_plan(container, policy)
        if plan is None:
            return False
        strip_id, lay, bins, parity = plan
        files = [b.member for b in bins] + parity
        chunks = -(-max(b.length for b in bins) // lay.chunk_bytes)
        intent = EgroupIntent(strip_id, container, tuple(files), self.node_id)
        await self.replicas.claim_files(intent)
        try:
            per = window_chunks(lay)
            for c0 in range(0, chunks, per):
                n = min(per, chunks - c0)
                await self._pack_window(container, lay, bins, parity, c0, n)
        except (PeerUnreachable, FabricError) as exc:
            log.warning("packing of %s abandoned: %s", container, exc)
            await self._roll_back(strip_id, [(f.egid, f.node) for f in files])
            return False
        cmd = CommitPackedStrip(
            strip_id,
            container,
            lay.chunk_bytes,
            chunks * lay.chunk_bytes,
            tuple(b.member for b in bins),
            tuple(parity),
            chunks * lay.parity_record_bytes,
            tuple(m for b in bins for m in b.moves),
            claimed=True,
        )
        result = await self.metadata.propose(cmd)
        if not result.ok:
            log.info("packed strip %s not committed: %s", strip_id, result.message)
            await self._roll_back(strip_id, [(f.egid, f.node) for f in files])
            return False
        self.stats.strips_packed += 1
        self.stats.converted_bytes += sum(b.length for b in bins)
        log.info("tail of %s packed: strip %s, %d + %d", container, strip_id, len(bins), lay.m)
        return True

    async def _pack_window(
        self,
        container: str,
        lay: erasure.Layout,
        bins: list[_Bin],
        parity: list[StripMember],
        c0: int,
        n: int,
    ) -> None:
        """Copy the extents that reach into chunks ``c0 .. c0 + n - 1`` into their bins and
        append the window's parity."""
        lo, hi = c0 * lay.chunk_bytes, (c0 + n) * lay.chunk_bytes
        wanted = []
        for j, b in enumerate(bins):
            while b.next < len(b.extents) and b.extents[b.next][2] < hi:
                wanted.append((j, b.next))
                b.next += 1
        payloads = await asyncio.gather(
            *(self.reader.read_stored(bins[j].extents[i][1]) for j, i in wanted)
        )
        fresh: list[list[bytes]] = [[] for _ in bins]
        for (j, i), payload in zip(wanted, payloads, strict=True):
            extent_id, ext, at = bins[j].extents[i]
            move = Move(container, extent_id, ext.egroup, at, len(payload))
            bins[j].moves.append(PackedExtent(j, move))
            fresh[j].append(payload)
        columns = []
        for b, new in zip(bins, fresh, strict=True):
            joined = b.buffered + b"".join(new)
            start = lo - b.buffered_at
            columns.append(joined[start : start + (hi - lo)])
            b.buffered, b.buffered_at = joined[start + (hi - lo) :], hi
        records = await self.offload(erasure.encode_window, lay, columns, n)
        appends = [
            self._append(b.member.node, b.member.egid, new, b.extents[b.next - len(new)][2])
            for b, new in zip(bins, fresh, strict=True)
            if new
        ]
        appends += [
            self._append(p.node, p.egid, recs, c0 * lay.parity_record_bytes)
            for p, recs in zip(parity, records, strict=True)
        ]
        await asyncio.gather(*appends)

    # --- rebuild of a lost member -----------------------------------------------------------
    async def _rebuild(self, strip: StripRecord, egid: str, lost_node: str) -> None:
        members = strip.members
        want = [m.egid for m in members].index(egid)
        domains = self.catalog.fault_domains()
        used = {domains[m.node] for m in members if m.egid != egid and m.node in domains}
        try:
            target = place(f"{strip.id}/{egid}", self.catalog.candidates(excluded_domains=used), 1)[
                0
            ]
        except NotEnoughDomains as exc:
            log.warning("cannot rebuild %s of strip %s yet: %s", egid, strip.id, exc)
            return
        lay = layout_of(strip)
        chunks = strip.length // lay.chunk_bytes
        claim = f"{strip.id}/{egid}"
        if self.metadata.state.get(keys.intent_key(claim)) is not None:
            # An earlier attempt's claim may name another target: end it (its partial
            # file is then a surplus copy, which the file sweep deletes) and claim anew.
            await self.metadata.propose(DropIntent(claim))
        await self.replicas.claim_files(
            EgroupIntent(claim, strip.container, (StripMember(egid, target),), self.node_id)
        )
        try:
            await self._call(target, DeleteEgroupFiles(egid))  # a leftover partial copy
            per = window_chunks(lay)
            size = lay.chunk_bytes if want < strip.k else lay.parity_record_bytes
            for c0 in range(0, chunks, per):
                payloads = await self._member_window(strip, lay, want, c0, min(per, chunks - c0))
                await self._append(target, egid, payloads, c0 * size)
        except (PeerUnreachable, FabricError) as exc:
            log.warning("rebuild of %s onto %s failed: %s", egid, target, exc)
            return
        result = await self.metadata.propose(
            MoveStripMember(strip.id, egid, lost_node, target, claimed=True)
        )
        if result.ok:
            self.stats.members_rebuilt += 1
            log.info("rebuilt %s of strip %s on %s (was on %s)", egid, strip.id, target, lost_node)

    async def _member_window(
        self, strip: StripRecord, lay: erasure.Layout, want: int, c0: int, n: int
    ) -> list[bytes]:
        """What member ``want`` holds for chunks ``c0 .. c0 + n - 1``: data chunks, or
        parity records.

        Parity is encoded afresh from the data (rebuilding lost data first), so it needs
        no surviving parity record for its headers.
        """
        h = lay.header_bytes
        if want < strip.k:
            frags = await self.strips.rebuild_window(strip, lay, want, c0, n)
            return [f[h:] for f in frags]
        size = n * lay.chunk_bytes
        got = await asyncio.gather(
            *(self.strips.chunk(m.egid, m.node, c0 * lay.chunk_bytes, size) for m in strip.data),
            return_exceptions=True,
        )
        data: list[bytes] = []
        for i, result in enumerate(got):
            if isinstance(result, BaseException):
                if not isinstance(result, PeerUnreachable | FabricError):
                    raise result
                frags = await self.strips.rebuild_window(strip, lay, i, c0, n)
                data.append(b"".join(f[h:] for f in frags))
            else:
                data.append(result)
        records: list[list[bytes]] = await self.offload(erasure.encode_window, lay, data, n)
        return records[want - strip.k]

    async def _collect(self, strip: StripRecord) -> None:
        up = self.metadata.state.up_nodes()
        files = [(m.egid, m.node) for m in strip.members]
        if any(n not in up for _, n in files):
            return  # wait until every member can delete its file
        await self._delete_files(files)
        result = await self.metadata.propose(DropStrip(strip.id))
        if result.ok:
            self.stats.strips_collected += 1
