"""Erasure coding of cold extent groups (EC-X style): conversion, degraded reads, rebuild.

Theory of operation
-------------------
Data lands as RF replicas. For a container with ``ec = k+m``, the leader's scanner
calls ``scan`` on every pass, which does one of these, in this order of priority:

1. **rebuild** a strip member (data or parity group) whose node is DOWN: each chunk is
   recomputed from ``k`` survivors onto a node in a fault domain the strip does not use,
   then ``MoveStripMember`` points metadata at it;
2. **collect** a strip whose data groups no longer hold a live extent;
3. **convert** (up to ``limits.EC_STRIPS_PER_PASS`` strips): pick ``k`` sealed groups that stayed
   unchanged for ``ec_delay_s``, one replica of each in ``k`` distinct fault domains
   (after checking those copies against the extent checksums), and ``m`` parity nodes
   in further domains; encode chunk by chunk (bounded memory: ``k + m`` chunks) and
   append parity, durably; commit ``CommitStrip``; only then delete the surplus data
   replicas. A crash before the commit leaves the groups replicated as they were (the
   parity files are unreferenced); a crash after it leaves at most surplus copies, which
   the owning node sweeps. Fewer than ``k`` cold groups make no strip: they stay
   replicated until more groups cool (so a writer must fill its groups, not leave
   half-full ones behind: see ``Gateway._append``).

A read of an extent in an EC'd group goes to the group's single copy; when that node is
down or its bytes fail the checksum, ``read_degraded`` rebuilds the chunks that cover
the extent from any ``k`` of the other members, and the caller repairs the bad copy.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from fabric import limits
from fabric.errors import FabricError
from fabric.extents import codec, erasure
from fabric.extents.policy import ContainerPolicy
from fabric.metadata import keys
from fabric.metadata.commands import CommitStrip, DropIntent, DropStrip, MoveStripMember
from fabric.metadata.records import EgroupIntent, EgroupRecord, StripMember, StripRecord
from fabric.metadata.state import MetadataState
from fabric.placement.rendezvous import NotEnoughDomains, place
from fabric.placement.strips import match_groups
from fabric.ports import Clock, Offload, PeerUnreachable
from fabric.wire.messages import (
    AppendExtents,
    DeleteEgroupFiles,
    EgroupStat,
    ExtentData,
    ReadExtent,
    RepairExtent,
    StatEgroup,
)
from nodes.services.catalog import Catalog
from nodes.services.metadata import MetadataService
from nodes.services.quiet import QuietClock
from nodes.services.reader import ReadCoordinator
from nodes.services.replicas import ReplicaClient
from nodes.services.strips import StripReader, layout_of

log = logging.getLogger(__name__)


def rebuild_suspects(state: MetadataState) -> list[StripRecord]:
    """Strips with a member on a node that is not UP: only these can need a rebuild."""
    up = state.up_nodes()
    ids = {s for node, held in state.idx.strips_on.items() if node not in up for s in held}
    found = (state.strip(i) for i in sorted(ids))
    return [strip for strip in found if strip is not None]


@dataclass
class EcStats:
    strips_converted: int = 0
    strips_rolled_back: int = 0
    members_rebuilt: int = 0
    strips_collected: int = 0
    converted_bytes: int = 0
    convert_seconds: float = 0.0
    """Time spent in conversions that wrote a strip (committed or rolled back)."""
    copies_made: int = 0


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
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.rng = rng
        self.metadata = metadata
        self.catalog = catalog
        self.replicas = replicas
        self.reader = reader
        self.strips = strips
        self.offload = offload
        self.stats = EcStats()
        self._quiet: dict[str, QuietClock] = {}
        """Per container: how long each of its sealed groups has stayed unchanged."""
        self.backend = erasure.backend()

    # --- helpers ----------------------------------------------------------------------------
    async def _call(self, node: str, msg: Any) -> Any:
        return await self.replicas.call_storage(node, msg)

    def _layout(self, strip: StripRecord) -> erasure.Layout:
        return layout_of(strip)

    # --- the scanner's entry point ----------------------------------------------------------
    async def scan(self) -> None:
        state = self.metadata.state
        up = state.up_nodes()
        for strip in rebuild_suspects(state):
            lost = [m for m in strip.members if m.node not in up]
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
            # Convert while there is cold data, up to a bound so a pass stays short.
            for _ in range(limits.EC_STRIPS_PER_PASS):
                if not await self._timed_convert(container.name, container.policy):
                    break

    async def _timed_convert(self, container: str, policy: ContainerPolicy) -> bool:
        started, attempts = self.clock.now(), self.stats.strips_rolled_back
        done = await self._convert(container, policy)
        if done or self.stats.strips_rolled_back != attempts:
            self.stats.convert_seconds += self.clock.now() - started
        return done

    # --- conversion -------------------------------------------------------------------------
    def _cold_groups(self, container: str, delay_s: float) -> list[EgroupRecord]:
        now = self.clock.now()
        state = self.metadata.state
        pending = state.egroups(state.idx.ec_pending.get(container, ()))
        candidates = [eg for eg in pending if eg.sealed]
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
        self, container: str, policy: ContainerPolicy
    ) -> tuple[list[tuple[EgroupRecord, str]], list[str]] | None:
        domains = self.catalog.fault_domains()
        up = self.metadata.state.up_nodes()
        cold = {eg.egid: eg for eg in self._cold_groups(container, policy.ec_delay_s)}
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

    async def _convert(self, container: str, policy: ContainerPolicy) -> bool:
        plan = self._plan(container, policy)
        if plan is None:
            return False
        chosen, parity_nodes = plan
        strip_id = f"st-{self.rng.getrandbits(48):012x}"
        lay = erasure.layout(policy.ec_k, policy.ec_m, limits.EC_CHUNK_BYTES)
        parity = [StripMember(f"{strip_id}-p{j}", node) for j, node in enumerate(parity_nodes)]
        copies = [StripMember(eg.egid, node) for eg, node in chosen if node not in eg.replicas]
        # Claim the parity files and the copies before their first byte: if this leader
        # dies mid-conversion, the next one finds them claimed and collects them.
        await self.replicas.claim_files(
            EgroupIntent(strip_id, container, tuple(parity + copies), self.node_id)
        )
        try:
            for eg, node in chosen:
                if node not in eg.replicas:
                    await self._copy_group(eg, node)
                else:
                    await self._verify_copy(eg, node)
            sizes = [await self._size(eg.egid, node) for eg, node in chosen]
            chunks = -(-max(sizes) // limits.EC_CHUNK_BYTES)
            for c in range(chunks):
                data = await asyncio.gather(
                    *(
                        self.strips.chunk(
                            eg.egid, node, c * limits.EC_CHUNK_BYTES, limits.EC_CHUNK_BYTES
                        )
                        for eg, node in chosen
                    )
                )
                records = await self.offload(erasure.encode, lay, list(data))
                await asyncio.gather(
                    *(
                        self._call(p.node, AppendExtents(p.egid, (rec,)))
                        for p, rec in zip(parity, records, strict=True)
                    )
                )
        except (PeerUnreachable, FabricError) as exc:
            log.warning("EC conversion abandoned: %s", exc)
            await self._roll_back(strip_id, chosen, parity)
            return False
        cmd = CommitStrip(
            strip_id,
            container,
            limits.EC_CHUNK_BYTES,
            chunks * limits.EC_CHUNK_BYTES,
            tuple(StripMember(eg.egid, node) for eg, node in chosen),
            tuple(parity),
            chunks * lay.parity_record_bytes,
            claimed=True,
        )
        result = await self.metadata.propose(cmd)
        if not result.ok:
            log.info("strip %s not committed: %s", strip_id, result.message)
            await self._roll_back(strip_id, chosen, parity)
            return False
        # Committed: the single copies plus parity carry the data. Drop the surplus.
        await self._delete_files(
            [(eg.egid, n) for eg, node in chosen for n in eg.replicas if n != node]
        )
        self.stats.strips_converted += 1
        self.stats.converted_bytes += sum(sizes)
        log.info(
            "strip %s: %d data groups + %d parity on %s",
            strip_id,
            len(chosen),
            len(parity),
            ",".join(parity_nodes),
        )
        return True

    async def _roll_back(
        self, strip_id: str, chosen: list[tuple[EgroupRecord, str]], parity: list[StripMember]
    ) -> None:
        """Delete what an uncommitted strip wrote: parity, and copies made for it."""
        copies = [(eg.egid, node) for eg, node in chosen if node not in eg.replicas]
        await self._delete_files([(p.egid, p.node) for p in parity] + copies)
        self.stats.strips_rolled_back += 1
        try:
            await self.metadata.propose(DropIntent(strip_id))
        except FabricError as exc:
            log.info("claim %s stays until it expires: %s", strip_id, exc)

    async def _copy_group(self, eg: EgroupRecord, node: str) -> None:
        """Give ``node`` a verified copy of a group, so the strip's copies span domains."""
        await self._call(node, DeleteEgroupFiles(eg.egid))  # a leftover partial copy
        source = next(n for n in eg.replicas if n in self.metadata.state.up_nodes())
        await self._verify_copy(eg, source)
        size = await self._size(eg.egid, source)
        for offset in range(0, size, limits.EC_CHUNK_BYTES):
            data = await self.strips.chunk(eg.egid, source, offset, limits.EC_CHUNK_BYTES)
            await self._call(node, AppendExtents(eg.egid, (data,)))
        self.stats.copies_made += 1

    async def _verify_copy(self, eg: EgroupRecord, node: str) -> None:
        """Make sure the copy that will stay is good: repair it from another if not."""
        for _, ext in self.metadata.state.extents_in(eg.egid):
            reply = await self._call(node, ReadExtent(eg.egid, ext.offset, ext.stored_len))
            assert isinstance(reply, ExtentData)
            if codec.checksum(reply.data) != ext.checksum:
                good = await self.reader.read_stored(ext)
                await self._call(node, RepairExtent(eg.egid, ext.offset, good))

    async def _size(self, egid: str, node: str) -> int:
        reply = await self._call(node, StatEgroup(egid))
        assert isinstance(reply, EgroupStat)
        return reply.size

    async def _delete_files(self, files: list[tuple[str, str]]) -> None:
        for egid, node, why in await self.replicas.delete_files(files):
            log.info("%s on %s stays until the file sweep finds it: %s", egid, node, why)

    # --- degraded reads and rebuild ---------------------------------------------------------
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
        lay = self._layout(strip)
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
            for c in range(chunks):
                payload = await self._member_chunk(strip, lay, want, c)
                await self._call(target, AppendExtents(egid, (payload,)))
        except (PeerUnreachable, FabricError) as exc:
            log.warning("rebuild of %s onto %s failed: %s", egid, target, exc)
            return
        result = await self.metadata.propose(
            MoveStripMember(strip.id, egid, lost_node, target, claimed=True)
        )
        if result.ok:
            self.stats.members_rebuilt += 1
            log.info("rebuilt %s of strip %s on %s (was on %s)", egid, strip.id, target, lost_node)

    async def _member_chunk(
        self, strip: StripRecord, lay: erasure.Layout, want: int, c: int
    ) -> bytes:
        """What member ``want`` holds for chunk ``c``: data bytes, or a parity record.

        Parity is encoded afresh from the data chunks (rebuilding lost data chunks first),
        so it needs no surviving parity record for its headers.
        """
        k = strip.k
        if want < k:
            frag = await self.strips.rebuild_chunk(strip, lay, want, c)
            return frag[lay.header_bytes :]
        data = []
        for i, (egid, node) in enumerate((m.egid, m.node) for m in strip.data):
            try:
                data.append(
                    await self.strips.chunk(egid, node, c * lay.chunk_bytes, lay.chunk_bytes)
                )
            except (PeerUnreachable, FabricError):
                frag = await self.strips.rebuild_chunk(strip, lay, i, c)
                data.append(frag[lay.header_bytes :])
        records: list[bytes] = await self.offload(erasure.encode, lay, data)
        record: bytes = records[want - k]
        return record

    async def _collect(self, strip: StripRecord) -> None:
        up = self.metadata.state.up_nodes()
        files = [(m.egid, m.node) for m in strip.members]
        if any(n not in up for _, n in files):
            return  # wait until every member can delete its file
        await self._delete_files(files)
        result = await self.metadata.propose(DropStrip(strip.id))
        if result.ok:
            self.stats.strips_collected += 1
