"""The leader's background scanner: a list of jobs, each with its own budget per pass.

Theory of operation
-------------------
Every ``limits.SCAN_EVERY_S`` the metadata leader runs its jobs in order. Each reads the state
machine's indexes (``fabric.metadata.indexes``), so a pass costs the work it finds,
not the number of groups stored:

* **seal**: an open group whose record has not changed for ``limits.EGROUP_IDLE_S`` is sealed
  (its writer went quiet or died; the next write there is refused and goes elsewhere);
* **collect**: a sealed group with no live extent has its replica files deleted, then
  is dropped from metadata (a replica on a DOWN node keeps its file until that node
  comes back and sweeps it: ``sweep_orphans``);
* **compact**: a sealed group more dead than live has its live extents copied into a
  new group (claimed first, like any new group) and moved there by one
  ``RelocateExtents``; the old group is then empty and collected on a later pass;
* **intents**: a claim on files (``EgroupIntent``) still open after ``limits.CLAIM_TIMEOUT_S``
  belongs to a writer that died between its appends and its commit: its files are
  deleted and the claim dropped (leaving a tombstone, so a late commit is refused);
* **files**: every ``limits.FILE_SWEEP_EVERY_S`` each UP node lists its group files; a file
  that is tombstoned, a surplus copy, or unknown to the metadata for a grace period is
  deleted; tombstones no disk can hold any more are pruned;
* then erasure coding (``EcService.scan``), the image catalog's orphans, and PENDING
  images whose upload never started within ``[limits] pending_image_ttl_s``.

So after a pass with every node UP, the bytes on the disks are exactly what the
metadata references or claims. Only the leader scans, so two scanners never race; a
new leader starts over from the replicated metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fabric import limits
from fabric.errors import FabricError
from fabric.metadata import keys
from fabric.metadata.commands import (
    DropEgroup,
    DropIntent,
    Move,
    PruneTombstones,
    RelocateExtents,
    SealEgroups,
)
from fabric.metadata.records import EgroupIntent, EgroupRecord
from fabric.metadata.state import MetadataState
from fabric.ports import Clock, DiskFault, PeerUnreachable
from fabric.wire.messages import DeleteEgroupFiles, EgroupList, ListEgroups
from nodes.services.catalog import Catalog
from nodes.services.ec import EcService, rebuild_suspects
from nodes.services.images import ImageService
from nodes.services.metadata import MetadataService
from nodes.services.quiet import QuietClock
from nodes.services.reader import ReadCoordinator
from nodes.services.replicas import ReplicaClient
from nodes.services.storage import StorageService

log = logging.getLogger(__name__)


@dataclass
class ScanStats:
    sealed: int = 0
    dropped: int = 0
    compacted: int = 0
    extents_moved: int = 0
    bytes_reclaimed: int = 0
    intents_expired: int = 0
    files_swept: int = 0
    tombstones_pruned: int = 0


class Scanner:
    def __init__(
        self,
        node_id: str,
        clock: Clock,
        metadata: MetadataService,
        catalog: Catalog,
        replicas: ReplicaClient,
        reader: ReadCoordinator,
        ec: EcService,
        images: ImageService,
        background_scale: int = 1,
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.background_scale = background_scale
        self.metadata = metadata
        self.catalog = catalog
        self.replicas = replicas
        self.reader = reader
        self.ec = ec
        self.images = images
        self.stats = ScanStats()
        self._idle = QuietClock()
        """Open groups: how long each record has stayed at its version."""
        self._claims = QuietClock()
        """Intents: how long each has stayed open."""
        self._unknown: dict[tuple[str, str], float] = {}
        """(node, egid) of files no record knows -> when first seen so."""
        self._last_sweep = float("-inf")
        self.jobs: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("seal", self._seal_idle),
            ("collect", self._collect_empty),
            ("compact", self._compact_dead),
            ("intents", self._expire_intents),
            ("files", self._sweep_files),
            ("ec", self.ec.scan),
            ("images", self.images.fail_orphans),
            ("expire-images", self.images.expire_pending),
        ]

    @property
    def state(self) -> MetadataState:
        return self.metadata.state

    async def run_forever(self) -> None:
        while True:
            await self.clock.sleep(limits.SCAN_EVERY_S * self.background_scale)
            if not self.metadata.is_leader:
                self._idle.clear()
                self._claims.clear()
                self._unknown.clear()
                await self.metadata.until_leader()
                continue
            await self.scan_once()

    async def scan_once(self) -> None:
        for name, job in self.jobs:
            try:
                await job()
            except (FabricError, PeerUnreachable, DiskFault) as exc:
                # An operating fault (a node died mid-compaction, say): the next pass
                # starts over from the metadata. A bug still propagates and is logged.
                log.warning("scanner job %s interrupted: %s", name, exc)

    # --- seal -------------------------------------------------------------------------------
    async def _seal_idle(self) -> None:
        now = self.clock.now()
        watched = open_groups(self.state)
        self._idle.keep_only(egid for egid, _ in watched)
        idle = [
            egid
            for egid, version in watched
            if self._idle.quiet_for(egid, version, now) >= limits.EGROUP_IDLE_S
        ]
        if idle:
            result = await self.metadata.propose(SealEgroups(tuple(idle)))
            if result.ok:
                self.stats.sealed += len(idle)

    # --- collect ----------------------------------------------------------------------------
    async def _collect_empty(self) -> None:
        for eg in to_collect(self.state):
            await self._collect(eg)

    async def _collect(self, eg: EgroupRecord) -> None:
        if not await self._delete_files(eg.egid, eg.replicas):
            return  # try again next pass, once the replica answers
        result = await self.metadata.propose(DropEgroup(eg.egid))
        if result.ok:
            self.stats.dropped += 1
            self.stats.bytes_reclaimed += eg.size * len(eg.replicas)
            log.info("collected extent group %s", eg.egid)

    async def _delete_files(self, egid: str, nodes: tuple[str, ...]) -> bool:
        """Delete ``egid``'s file on each node; False if a node that is not DOWN missed it
        (a DOWN node deletes its copy itself when it comes back)."""
        records = self.state.nodes()
        for _, node, why in await self.replicas.delete_files((egid, n) for n in nodes):
            known = records.get(node)
            if known is None or known.state != "DOWN":
                log.info("delete of %s on %s later: %s", egid, node, why)
                return False
        return True

    # --- compact ----------------------------------------------------------------------------
    async def _compact_dead(self) -> None:
        for eg in to_compact(self.state):
            await self._compact(eg)

    async def _compact(self, eg: EgroupRecord) -> None:
        live = self.state.extents_in(eg.egid)
        if not live:
            return
        payloads = [await self.reader.read_stored(ext) for _, ext in live]
        rf = self.catalog.policy(eg.container).rf  # an EC'd group has one copy; its data gets rf
        target = self.catalog.place_egroup(eg.container, rf, set())
        await self.replicas.claim(target)
        offsets = await self.replicas.append_replicas(target, payloads)
        moves = tuple(
            Move(eg.container, extent_id, eg.egid, off, len(data))
            for (extent_id, _), off, data in zip(live, offsets, payloads, strict=True)
        )
        result = await self.metadata.propose(RelocateExtents(target, moves, claimed=True))
        if result.ok:
            self.stats.compacted += 1
            self.stats.extents_moved += int(result.value)
            log.info("compacted %s into %s (%d extents)", eg.egid, target.egid, result.value)

    # --- intents ----------------------------------------------------------------------------
    async def _expire_intents(self) -> None:
        now = self.clock.now()
        intents = list(self.state.scan(keys.EGROUP_INTENT))
        self._claims.keep_only(key for key, _ in intents)
        expired = [
            item.value
            for key, item in intents
            if self._claims.quiet_for(key, item.version, now) >= limits.CLAIM_TIMEOUT_S
        ]
        for intent in expired[: limits.EXPIRE_CLAIMS_PER_PASS]:
            await self._expire(intent)

    async def _expire(self, intent: EgroupIntent) -> None:
        for f in intent.files:
            eg = self.state.egroup(f.egid)
            if eg is not None and f.node in eg.replicas:
                continue  # the file made it into the metadata: it is data now
            if not await self._delete_files(f.egid, (f.node,)):
                return
        result = await self.metadata.propose(DropIntent(intent.id))
        if result.ok:
            self.stats.intents_expired += 1
            log.info("claim %s of %s expired; its files are deleted", intent.id, intent.owner)

    # --- files ------------------------------------------------------------------------------
    async def _sweep_files(self) -> None:
        now = self.clock.now()
        if now - self._last_sweep < limits.FILE_SWEEP_EVERY_S * self.background_scale:
            return
        self._last_sweep = now
        await self.metadata.read_index()
        listed: dict[str, tuple[str, ...]] = {}
        for node in sorted(self.state.up_nodes()):
            try:
                reply = await self.replicas.call_storage(node, ListEgroups())
            except (PeerUnreachable, FabricError) as exc:
                log.info("file sweep skips %s: %s", node, exc)
                continue
            assert isinstance(reply, EgroupList)
            listed[node] = reply.egids
        seen_unknown: set[tuple[str, str]] = set()
        held: set[str] = set()
        for node, egids in listed.items():
            for egid in egids:
                verdict = self._file_verdict(node, egid)
                if verdict == "keep":
                    held.add(egid)
                    continue
                if verdict == "unknown":
                    seen_unknown.add((node, egid))
                    first = self._unknown.setdefault((node, egid), now)
                    if now - first < limits.UNKNOWN_FILE_GRACE_S:
                        held.add(egid)
                        continue
                if await self._delete_files(egid, (node,)):
                    self.stats.files_swept += 1
                else:
                    held.add(egid)
        self._unknown = {k: v for k, v in self._unknown.items() if k in seen_unknown}
        everyone = self.catalog.membership.ids()
        if set(listed) == everyone:
            await self._prune_tombstones(held)

    def _file_verdict(self, node: str, egid: str) -> str:
        """ "keep", "garbage" or "unknown" for ``node``'s file of ``egid``."""
        if self.state.idx.intents_on.get((egid, node)):
            return "keep"  # claimed: a writer is at work (or its claim will expire)
        if self.state.get(keys.dropped_key(egid)) is not None:
            return "garbage"
        eg = self.state.egroup(egid)
        if eg is None:
            return "unknown"
        if node in eg.replicas:
            return "keep"
        # A surplus copy (EC kept another, a member moved) once the group is sealed.
        return "garbage" if eg.sealed else "keep"

    async def _prune_tombstones(self, held: set[str]) -> None:
        """Every node listed its files: tombstones of groups no disk holds can go."""
        gone = [
            key[len(keys.EGROUP_DROPPED) :]
            for key, _ in self.state.scan(keys.EGROUP_DROPPED)
            if key[len(keys.EGROUP_DROPPED) :] not in held
        ][: limits.PRUNE_TOMBSTONES_PER_PASS]
        if gone:
            result = await self.metadata.propose(PruneTombstones(tuple(gone)))
            if result.ok:
                self.stats.tombstones_pruned += int(result.value)


# --- what each job would work on: pure reads of the state machine's indexes ---------------
def to_collect(state: MetadataState) -> list[EgroupRecord]:
    return state.egroups(sorted(state.idx.collectable)[: limits.COLLECT_GROUPS_PER_PASS])


def to_compact(state: MetadataState) -> list[EgroupRecord]:
    groups = [
        eg
        for eg in state.egroups(state.idx.compactable)
        if eg.dead_bytes >= limits.COMPACT_MIN_DEAD_BYTES and eg.extents
    ]
    return groups[: limits.COMPACT_GROUPS_PER_PASS]


def open_groups(state: MetadataState) -> list[tuple[str, int]]:
    """(egid, record version) of the groups the seal job watches."""
    return [(g, state.version(keys.egroup_key(g))) for g in sorted(state.idx.open_egroups)]


def claims(state: MetadataState) -> list[tuple[str, int]]:
    """(key, version) of the open claims the intents job watches."""
    return [(key, item.version) for key, item in state.scan(keys.EGROUP_INTENT)]


def pass_reads(state: MetadataState) -> int:
    """Everything one scanner pass reads when it finds no work (the benchmark's unit)."""
    found = len(to_collect(state)) + len(to_compact(state))
    found += len(open_groups(state)) + len(claims(state)) + len(rebuild_suspects(state))
    found += sum(len(state.idx.ec_pending.get(c.name, ())) for c in state.containers())
    return found + len(state.idx.pending_images)


async def sweep_orphans(metadata: MetadataService, storage: StorageService) -> int:
    """Delete local replicas the cluster dropped or moved while this node was away."""
    await metadata.read_index()
    state = metadata.state
    swept = 0
    for egid in storage.egroups():
        if state.idx.intents_on.get((egid, metadata.node_id)):
            continue
        record = state.egroup(egid)
        dropped = state.get(keys.dropped_key(egid)) is not None
        # A sealed group that no longer lists this node (EC kept another copy, or a
        # member moved while we were away) has no use for our file either.
        surplus = record is not None and record.sealed and metadata.node_id not in record.replicas
        if dropped or surplus:
            await storage.delete(DeleteEgroupFiles(egid))
            swept += 1
    return swept
