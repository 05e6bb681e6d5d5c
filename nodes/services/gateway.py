"""The gateway: containers, vdisks, and the read and write coordinators on this node.

Theory of operation
-------------------
Write (``write``): the byte stream is cut at extent boundaries. A piece that covers a
whole extent replaces it; a partial piece is merged into the extent's current bytes
(read-modify-write, under a per-extent lock on this node and with the extent id it read
as a precondition of the commit, so a concurrent writer elsewhere is detected and the
merge redone, never lost). Pieces are committed in batches of ``BATCH_BYTES``:

1. all-zero extents become holes; with dedup, an extent whose content id (xxh3-128) is
   already stored in the container costs a reference, not bytes;
2. the rest are compressed (zstd, when it saves enough) and appended to this node's open
   extent group for the container on all RF replicas, one fsync per replica per batch;
3. only then is one ``WriteExtents`` committed through Raft: data before metadata.

An append that fails on a replica abandons that extent group (it is sealed) and the
batch goes to a new group placed on healthy fault domains; if fewer than RF domains are
healthy the write fails with 503 rather than store fewer copies.

Read (``read``): a linearizable read point first, then for each extent: a hole reads as
zeros; otherwise the stored bytes come from the local replica if there is one, else
another; a checksum mismatch or a dead peer falls through to the next replica, and the
bad copy is rewritten from the good one in the background. Extents are fetched a few
ahead of the one being streamed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import xxhash

from fabric import limits
from fabric.config import ClusterConfig
from fabric.errors import BadRequest, Conflict, FabricError, NotFound, Unavailable, from_code
from fabric.extents import codec
from fabric.extents.policy import ContainerPolicy, check_name
from fabric.metadata.commands import (
    CreateContainer,
    CreateVdisk,
    DeleteContainer,
    DeleteVdisk,
    MapWrite,
    NewEgroup,
    NewExtent,
    RegisterIntents,
    SealEgroups,
    WriteExtents,
)
from fabric.metadata.records import (
    ContainerRecord,
    EgroupIntent,
    EgroupRecord,
    ExtentRecord,
    StripMember,
    VdiskRecord,
)
from fabric.placement.rendezvous import Candidate, place
from fabric.ports import Clock, PeerUnreachable, Transport
from fabric.wire.messages import (
    AppendExtents,
    AppendReply,
    DeleteEgroupFiles,
    ExtentData,
    ListEgroups,
    ReadExtent,
    RepairExtent,
    StatEgroup,
)
from nodes.services.metadata import MetadataService
from nodes.services.storage import StorageService

log = logging.getLogger(__name__)

Offload = Callable[..., Awaitable[Any]]


class EcReader(Protocol):
    async def read_degraded(self, eg: EgroupRecord, offset: int, length: int) -> bytes: ...


BATCH_BYTES = 4 * limits.MiB
"""Extents committed together: one fsync per replica and one Raft entry per batch."""
BATCHES_IN_FLIGHT = 2
READ_AHEAD_EXTENTS = 4
EGROUP_MAX_BYTES = 8 * limits.MiB
"""An extent group is sealed once this full: the unit of EC and of compaction."""
WRITE_RETRIES = 40
RETRY_BACKOFF_S = 0.002
"""First retry waits up to this long; each further one up to twice as long (capped)."""
REPLICA_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0
"""A replica that does not answer a read this fast is skipped for the next one."""
LOCK_STRIPES = 1024


@dataclass
class OpenEgroup:
    record: NewEgroup
    size: int = 0
    claimed: bool = False
    """Its files are claimed in metadata (``RegisterIntents``), so appends may begin."""
    unanswered: int = 0
    """Batches appended here whose ``WriteExtents`` has not been answered yet."""
    full: bool = False


@dataclass
class Piece:
    index: int
    inner: int
    data: bytes


@dataclass
class Planned:
    """One extent of a batch, ready to commit."""

    index: int
    expect: str | None
    extent_id: str = ""
    raw: bytes = b""
    encoded: codec.Encoded | None = None


@dataclass
class WriteStats:
    batches: int = 0
    retries: int = 0
    dedup_hits: int = 0
    holes: int = 0
    degraded_reads: int = 0
    repairs: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Gateway:
    def __init__(
        self,
        node_id: str,
        config: ClusterConfig,
        clock: Clock,
        rng: Any,
        transport: Transport,
        metadata: MetadataService,
        storage: StorageService,
        offload: Offload,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.clock = clock
        self.rng = rng
        self.transport = transport
        self.metadata = metadata
        self.storage = storage
        self.offload = offload
        self.extent_bytes = config.extent_bytes
        self._open: dict[str, OpenEgroup] = {}
        self._to_seal: dict[str, set[str]] = {}
        self._append_locks: dict[str, asyncio.Lock] = {}
        self._stripes = [asyncio.Lock() for _ in range(LOCK_STRIPES)]
        self.stats = WriteStats()
        self._repairs: set[asyncio.Future[None]] = set()
        self.ec: EcReader | None = None
        """Set by the node once its EC service exists (reads of erasure-coded groups)."""

    # --- lookups (callers did a read_index first) -------------------------------------------
    def container(self, name: str) -> ContainerRecord:
        record = self.metadata.state.container(name)
        if record is None:
            raise NotFound(f"no container {name!r}")
        return record

    def policy(self, container: str) -> ContainerPolicy:
        return self.container(container).policy

    def vdisk(self, ref: str) -> VdiskRecord:
        """A vdisk by id or by name."""
        record = self.metadata.state.vdisk_by_ref(ref)
        if record is None:
            raise NotFound(f"no vdisk {ref!r}")
        return record

    def fault_domains(self) -> dict[str, str]:
        """node id -> its fault domain at the configured level."""
        level = self.config.fault_domain
        return {
            n.id: (n.id if level == "node" else n.labels.get(level, n.id))
            for n in self.config.nodes
        }

    # --- containers -------------------------------------------------------------------------
    async def create_container(self, name: str, policy: ContainerPolicy) -> ContainerRecord:
        check_name("container", name)
        domains = len(set(self.fault_domains().values()))
        if policy.rf > domains:
            raise BadRequest(
                f"rf {policy.rf} needs {policy.rf} fault domains "
                f"({self.config.fault_domain}s); the cluster has {domains}"
            )
        if policy.ec_k and policy.ec_k + policy.ec_m > domains:
            raise BadRequest(
                f"ec {policy.ec} needs {policy.ec_k + policy.ec_m} fault domains "
                f"({self.config.fault_domain}s); the cluster has {domains}"
            )
        result = await self.metadata.propose(
            CreateContainer(name, policy.to_dict(), self.clock.wall())
        )
        if not result.ok:
            raise from_code(result.code, result.message)
        await self.metadata.wait_applied(self.metadata.state.applied_index)
        return self.container(name)

    async def delete_container(self, name: str) -> None:
        result = await self.metadata.propose(DeleteContainer(name))
        if not result.ok:
            raise from_code(result.code, result.message)

    async def containers(self) -> list[ContainerRecord]:
        await self.metadata.read_index()
        return self.metadata.state.containers()

    # --- vdisks -----------------------------------------------------------------------------
    async def create_vdisk(self, name: str, container: str, size: int) -> VdiskRecord:
        check_name("vdisk", name)
        top = limits.MAX_VDISK_BYTES
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= top:
            raise BadRequest(f"size must be 1..{top} bytes")
        vdisk_id = f"vd-{self.rng.getrandbits(64):016x}"
        result = await self.metadata.propose(
            CreateVdisk(vdisk_id, name, container, size, self.clock.wall())
        )
        if not result.ok:
            raise from_code(result.code, result.message)
        return self.vdisk(vdisk_id)

    async def delete_vdisk(self, ref: str) -> None:
        await self.metadata.read_index()
        vd = self.vdisk(ref)
        result = await self.metadata.propose(DeleteVdisk(vd.id))
        if not result.ok:
            raise from_code(result.code, result.message)

    async def vdisks(self) -> list[VdiskRecord]:
        await self.metadata.read_index()
        return self.metadata.state.vdisks()

    async def get_vdisk(self, ref: str) -> VdiskRecord:
        await self.metadata.read_index()
        return self.vdisk(ref)

    # --- write ------------------------------------------------------------------------------
    def check_range(self, vd: VdiskRecord, offset: int, length: int) -> None:
        if offset < 0 or length < 0:
            raise BadRequest(f"offset and length must not be negative ({offset}, {length})")
        if offset + length > vd.size:
            raise BadRequest(
                f"{offset + length} bytes is past the end of vdisk {vd.name!r} ({vd.size} bytes)"
            )

    async def write(self, ref: str, offset: int, length: int, chunks: AsyncIterator[bytes]) -> int:
        """Store ``length`` bytes from ``chunks`` at ``offset``; return bytes written."""
        await self.metadata.read_index()
        vd = self.vdisk(ref)
        self.check_range(vd, offset, length)
        written = await self._write_pieces(vd, self._pieces(offset, length, chunks))
        if written != length:
            raise BadRequest(f"body ended after {written} of {length} bytes")
        return written

    async def write_extents(self, ref: str, first: int, extents: list[bytes]) -> int:
        """Store whole extents ``first``, ``first + 1``, ... (the last may be the vdisk's
        short tail): the image service's path, with no re-cutting of the bytes."""
        await self.metadata.read_index()
        vd = self.vdisk(ref)
        self.check_range(vd, first * self.extent_bytes, sum(map(len, extents)))

        async def pieces() -> AsyncIterator[Piece]:
            for i, data in enumerate(extents):
                yield Piece(first + i, 0, data)

        return await self._write_pieces(vd, pieces())

    async def _write_pieces(self, vd: VdiskRecord, pieces: AsyncIterator[Piece]) -> int:
        """Commit pieces in batches, ``BATCHES_IN_FLIGHT`` at once; bytes written."""
        policy = self.policy(vd.container)
        inflight: set[asyncio.Task[None]] = set()
        batch: list[Piece] = []
        batch_bytes = 0
        written = 0
        try:
            async for piece in pieces:
                batch.append(piece)
                batch_bytes += len(piece.data)
                written += len(piece.data)
                if batch_bytes >= BATCH_BYTES:
                    await self._launch(inflight, vd, policy, batch)
                    batch, batch_bytes = [], 0
            if batch:
                await self._launch(inflight, vd, policy, batch)
            await _drain(inflight)
            await self._seal_filled(vd.container)
        finally:
            for task in inflight:
                task.cancel()
        return written

    async def _launch(
        self,
        inflight: set[asyncio.Task[None]],
        vd: VdiskRecord,
        policy: ContainerPolicy,
        batch: list[Piece],
    ) -> None:
        while len(inflight) >= BATCHES_IN_FLIGHT:
            done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                inflight.discard(task)
                task.result()  # re-raise a failed batch now
        inflight.add(asyncio.ensure_future(self._commit_batch(vd, policy, batch)))

    async def _pieces(
        self, offset: int, length: int, chunks: AsyncIterator[bytes]
    ) -> AsyncIterator[Piece]:
        """Cut the stream at extent boundaries (never more than one extent buffered)."""
        e = self.extent_bytes
        buf = bytearray()
        pos = offset
        end = offset + length
        async for chunk in chunks:
            buf += chunk
            while buf:
                inner = pos % e
                want = min(e - inner, end - pos)
                if want <= 0 or len(buf) < want:
                    break
                yield Piece(pos // e, inner, bytes(buf[:want]))
                del buf[:want]
                pos += want
            if pos + len(buf) > end:
                raise BadRequest(f"body is longer than the {length} bytes announced")
        if buf:
            yield Piece(pos // e, pos % e, bytes(buf))

    def _extent_len(self, vd: VdiskRecord, index: int) -> int:
        return min(self.extent_bytes, vd.size - index * self.extent_bytes)

    async def _commit_batch(
        self, vd: VdiskRecord, policy: ContainerPolicy, batch: list[Piece]
    ) -> None:
        partial = [p for p in batch if p.inner or len(p.data) != self._extent_len(vd, p.index)]
        locks = sorted({self._stripe(vd.id, p.index) for p in partial})
        for i in locks:
            await self._stripes[i].acquire()
        try:
            for attempt in range(WRITE_RETRIES):
                if attempt:
                    self.stats.retries += 1
                    # Random backoff: writers colliding on one extent spread out.
                    await self.clock.sleep(
                        self.rng.uniform(0, RETRY_BACKOFF_S * 2 ** min(attempt, 6))
                    )
                    await self.metadata.read_index()
                planned = await self._plan(vd, policy, batch)
                result = await self._store_and_commit(vd, policy, planned)
                if result is None:
                    self.stats.batches += 1
                    return
                code, message = result
                if code not in ("conflict", "missing_extent", "egroup_sealed"):
                    raise from_code(code, message)
                log.info("write batch retried (%s): %s", code, message)
            raise Conflict("the write kept colliding with concurrent writes; retry it")
        finally:
            for i in locks:
                self._stripes[i].release()

    def _stripe(self, vdisk_id: str, index: int) -> int:
        # xxhash, not hash(): str hashing is salted per process, and lock order must be
        # the same in every run of a simulation.
        return xxhash.xxh3_64_intdigest(f"{vdisk_id}/{index}".encode()) % LOCK_STRIPES

    async def _plan(
        self, vd: VdiskRecord, policy: ContainerPolicy, batch: list[Piece]
    ) -> list[Planned]:
        planned = []
        for p in batch:
            ext_len = self._extent_len(vd, p.index)
            if p.inner == 0 and len(p.data) == ext_len:
                planned.append(Planned(p.index, None, raw=p.data))
                continue
            old_id = self.metadata.state.map_entry(vd.id, p.index)
            old = await self._fetch(vd, p.index) if old_id else None
            raw = bytearray(old if old is not None else bytes(ext_len))
            raw[p.inner : p.inner + len(p.data)] = p.data
            planned.append(Planned(p.index, old_id, raw=bytes(raw)))
        await self.offload(_classify, planned, policy)
        container = vd.container
        storing: set[str] = set()
        for pl in planned:
            if pl.encoded is not None or not pl.extent_id:
                continue
            if self.metadata.state.extent(container, pl.extent_id) or pl.extent_id in storing:
                self.stats.dedup_hits += 1
                continue
            # A new content id: store its bytes (once, however often the batch repeats it).
            storing.add(pl.extent_id)
            pl.encoded = await self.offload(codec.encode, pl.raw, policy)
        for pl in planned:
            if pl.encoded is not None and not pl.extent_id:
                pl.extent_id = f"u{self.rng.getrandbits(96):024x}"
        return planned

    async def _store_and_commit(
        self, vd: VdiskRecord, policy: ContainerPolicy, planned: list[Planned]
    ) -> tuple[str, str] | None:
        to_store = [pl for pl in planned if pl.encoded is not None]
        egroups: tuple[NewEgroup, ...] = ()
        extents: list[NewExtent] = []
        seal: tuple[str, ...] = ()
        opened: OpenEgroup | None = None
        if to_store:
            opened, offsets, seal = await self._append(
                vd.container, policy.rf, [pl.encoded.stored for pl in to_store if pl.encoded]
            )
            eg = opened.record
            egroups = (eg,)
            for pl, off in zip(to_store, offsets, strict=True):
                enc = pl.encoded
                assert enc is not None
                extents.append(
                    NewExtent(
                        pl.extent_id,
                        eg.egid,
                        off,
                        len(enc.stored),
                        enc.raw_len,
                        enc.compressed,
                        enc.checksum,
                    )
                )
        maps = tuple(MapWrite(pl.index, pl.expect, pl.extent_id) for pl in planned)
        self.stats.holes += sum(1 for pl in planned if not pl.extent_id)
        cmd = WriteExtents(vd.id, egroups, tuple(extents), maps, seal, claimed=True)
        try:
            result = await self.metadata.propose(cmd)
        finally:
            if opened is not None:
                opened.unanswered -= 1
                if opened.full and opened.unanswered == 0:
                    self._to_seal.setdefault(vd.container, set()).add(opened.record.egid)
        if result.ok:
            return None
        if result.code == "egroup_sealed" and self._open.get(vd.container) is opened:
            # Forget the refused group only: by now the open group may be a newer one,
            # which would otherwise be left half full.
            del self._open[vd.container]
        return result.code, result.message

    async def _seal_filled(self, container: str) -> None:
        """Seal the groups this write filled that no later batch of it carried a seal for."""
        seal = self._to_seal.pop(container, set())
        if not seal:
            return
        try:
            result = await self.metadata.propose(SealEgroups(tuple(sorted(seal))))
        except FabricError as exc:
            result_ok, why = False, str(exc)
        else:
            result_ok, why = result.ok, result.message
        if not result_ok:
            # The data is committed; the scanner seals an idle group in a few seconds.
            log.info("sealing %s left to the scanner: %s", ",".join(sorted(seal)), why)

    # --- extent groups ----------------------------------------------------------------------
    async def _append(
        self, container: str, rf: int, payloads: list[bytes]
    ) -> tuple[OpenEgroup, list[int], tuple[str, ...]]:
        lock = self._append_locks.setdefault(container, asyncio.Lock())
        excluded: set[str] = set()
        async with lock:
            for _ in range(3):
                eg = self._open.get(container)
                if eg is None or set(eg.record.replicas) & excluded:
                    eg = self._new_egroup(container, rf, excluded)
                if not eg.claimed:
                    await self.claim(eg.record)
                    eg.claimed = True
                try:
                    offsets = await self.append_replicas(eg.record, payloads)
                except (PeerUnreachable, FabricError) as exc:
                    log.warning("append to extent group %s failed: %s", eg.record.egid, exc)
                    excluded.add(getattr(exc, "peer", "") or "")
                    self._abandon(container, eg)
                    continue
                eg.size += sum(len(p) for p in payloads)
                eg.unanswered += 1
                seal = tuple(sorted(self._to_seal.pop(container, set())))
                if eg.size >= EGROUP_MAX_BYTES:
                    # Full: no further batch goes here, but it is sealed only once every
                    # batch appended here has been answered (then by the next batch, or at
                    # the end of the write). Sealed by the batch that filled it, it could
                    # be sealed before an earlier batch still in flight committed (Raft
                    # orders the two as they reach the leader): that batch was refused
                    # and rewritten into a new group, and a sequential write left
                    # half-full groups; EC with k = 2 then had no partner for the last
                    # one, replicated for good (test_erasure_sim: 17 of 1,000 seeds).
                    self._open.pop(container, None)
                    eg.full = True
                return eg, offsets, seal
        raise Unavailable(f"could not store {len(payloads)} extents on {rf} healthy replicas")

    def _abandon(self, container: str, eg: OpenEgroup) -> None:
        if self._open.get(container) is eg:
            del self._open[container]
        self._to_seal.setdefault(container, set()).add(eg.record.egid)

    def _new_egroup(self, container: str, rf: int, excluded: set[str]) -> OpenEgroup:
        eg = OpenEgroup(self.place_egroup(container, rf, excluded))
        self._open[container] = eg
        return eg

    def candidates(
        self, excluded_nodes: set[str] | None = None, excluded_domains: set[str] | None = None
    ) -> list[Candidate]:
        """UP nodes, with their fault domains, that placement may choose from."""
        domains = self.fault_domains()
        skip_nodes = excluded_nodes or set()
        skip_domains = excluded_domains or set()
        return [
            Candidate(n, domains[n])
            for n in sorted(self.metadata.state.up_nodes())
            if n in domains and n not in skip_nodes and domains[n] not in skip_domains
        ]

    def place_egroup(self, container: str, rf: int, excluded: set[str]) -> NewEgroup:
        """A new extent group on ``rf`` healthy fault domains, this node first if it can."""
        candidates = self.candidates(excluded_nodes=excluded)
        egid = f"eg-{self.node_id}-{self.rng.getrandbits(48):012x}"
        prefer = self.node_id if any(c.node == self.node_id for c in candidates) else None
        replicas = place(egid, candidates, rf, prefer=prefer)
        return NewEgroup(egid, container, tuple(replicas), self.node_id)

    async def claim(self, eg: NewEgroup) -> None:
        """Claim a new group's files before its first byte (data without metadata is
        then either committed or collected, never left behind)."""
        files = tuple(StripMember(eg.egid, node) for node in eg.replicas)
        await self.claim_files(EgroupIntent(eg.egid, eg.container, files, self.node_id))

    async def claim_files(self, intent: EgroupIntent) -> None:
        result = await self.metadata.propose(RegisterIntents((intent,)))
        if not result.ok:
            raise from_code(result.code, result.message)

    async def append_replicas(self, eg: NewEgroup, payloads: list[bytes]) -> list[int]:
        msg = AppendExtents(eg.egid, tuple(payloads))
        replies = await asyncio.gather(
            *(self.call_storage(node, msg) for node in eg.replicas), return_exceptions=True
        )
        offsets: list[tuple[int, ...]] = []
        for node, reply in zip(eg.replicas, replies, strict=True):
            if isinstance(reply, BaseException):
                if isinstance(reply, PeerUnreachable | FabricError):
                    raise PeerUnreachable(node, str(reply))
                raise reply
            assert isinstance(reply, AppendReply)
            offsets.append(reply.offsets)
        if any(o != offsets[0] for o in offsets):
            raise Unavailable(f"replicas of {eg.egid} disagree on offsets")
        return list(offsets[0])

    async def call_storage(self, node: str, msg: Any) -> Any:
        if node == self.node_id:
            return await self.dispatch_storage(msg)
        timeout = READ_TIMEOUT_S if isinstance(msg, ReadExtent) else REPLICA_TIMEOUT_S
        return await self.transport.call(node, msg, timeout)

    async def dispatch_storage(self, msg: Any) -> Any:
        match msg:
            case AppendExtents():
                return await self.storage.append(msg)
            case ReadExtent():
                return await self.storage.read(msg)
            case RepairExtent():
                return await self.storage.repair(msg)
            case DeleteEgroupFiles():
                return await self.storage.delete(msg)
            case StatEgroup():
                return await self.storage.stat(msg)
            case ListEgroups():
                return self.storage.list()
        raise BadRequest(f"not a storage message: {type(msg).__name__}")

    # --- read -------------------------------------------------------------------------------
    async def read(
        self, ref: str, offset: int, length: int | None
    ) -> tuple[VdiskRecord, int, AsyncIterator[bytes]]:
        """(vdisk, length, stream of the bytes); range checks happen before streaming."""
        await self.metadata.read_index()
        vd = self.vdisk(ref)
        if length is None:
            length = max(0, vd.size - offset)
        self.check_range(vd, offset, length)
        return vd, length, self._stream(vd, offset, length)

    async def _stream(self, vd: VdiskRecord, offset: int, length: int) -> AsyncIterator[bytes]:
        e = self.extent_bytes
        if length == 0:
            return
        first, last = offset // e, (offset + length - 1) // e
        pending: dict[int, asyncio.Task[bytes | None]] = {}
        try:
            for index in range(first, last + 1):
                for ahead in range(index, min(index + READ_AHEAD_EXTENTS, last + 1)):
                    if ahead not in pending:
                        pending[ahead] = asyncio.ensure_future(self._fetch(vd, ahead))
                raw = await pending.pop(index)
                lo = max(offset, index * e) - index * e
                hi = min(offset + length, (index + 1) * e) - index * e
                yield raw[lo:hi] if raw is not None else bytes(hi - lo)
        finally:
            for task in pending.values():
                task.cancel()

    async def _fetch(self, vd: VdiskRecord, index: int) -> bytes | None:
        """The raw bytes of extent ``index`` of ``vd`` (None for a hole)."""
        extent_id = self.metadata.state.map_entry(vd.id, index)
        if not extent_id:
            return None
        ext = self.metadata.state.extent(vd.container, extent_id)
        if ext is None:
            raise Unavailable(f"extent {extent_id} of {vd.name} vanished; retry the read")
        stored = await self.read_stored(ext)
        raw: bytes = await self.offload(
            codec.decode, stored, ext.compressed, ext.raw_len, ext.checksum
        )
        return raw

    def _replica_order(self, replicas: tuple[str, ...]) -> list[str]:
        live = self.metadata.state.up_nodes()
        up = [n for n in replicas if n in live]
        rest = [n for n in replicas if n not in up]
        ordered = sorted(up, key=lambda n: n != self.node_id) + rest
        return ordered

    async def read_stored(self, ext: ExtentRecord) -> bytes:
        eg = self.metadata.state.egroup(ext.egroup)
        if eg is None:
            raise Unavailable(f"extent group {ext.egroup} is gone; retry the read")
        msg = ReadExtent(ext.egroup, ext.offset, ext.stored_len)
        bad: list[str] = []
        errors: list[str] = []
        for node in self._replica_order(eg.replicas):
            try:
                reply = await self.call_storage(node, msg)
            except (PeerUnreachable, FabricError) as exc:
                errors.append(f"{node}: {exc}")
                self.stats.degraded_reads += 1
                continue
            assert isinstance(reply, ExtentData)
            if codec.checksum(reply.data) != ext.checksum:
                log.warning(
                    "checksum mismatch for extent at %s:%d on %s",
                    ext.egroup,
                    ext.offset,
                    node,
                )
                errors.append(f"{node}: checksum mismatch")
                bad.append(node)
                continue
            for node_bad in bad:
                task = asyncio.ensure_future(self._repair(node_bad, ext, reply.data))
                self._repairs.add(task)
                task.add_done_callback(self._repairs.discard)
            return reply.data
        if eg.strip and self.ec is not None:
            return await self._read_from_strip(eg, ext, errors)
        raise Unavailable(f"no readable copy of an extent in {ext.egroup}: " + "; ".join(errors))

    async def _read_from_strip(
        self, eg: EgroupRecord, ext: ExtentRecord, errors: list[str]
    ) -> bytes:
        """Degraded read: rebuild the extent from the strip, then mend its one copy."""
        assert self.ec is not None
        data = await self.ec.read_degraded(eg, ext.offset, ext.stored_len)
        if codec.checksum(data) != ext.checksum:
            raise Unavailable(
                f"extent in {ext.egroup} unreadable and not rebuildable: " + "; ".join(errors)
            )
        if eg.replicas[0] in self.metadata.state.up_nodes():
            task = asyncio.ensure_future(self._repair(eg.replicas[0], ext, data))
            self._repairs.add(task)
            task.add_done_callback(self._repairs.discard)
        return data

    async def _repair(self, node: str, ext: ExtentRecord, stored: bytes) -> None:
        try:
            await self.call_storage(node, RepairExtent(ext.egroup, ext.offset, stored))
            self.stats.repairs += 1
        except (PeerUnreachable, FabricError) as exc:
            log.warning("could not repair %s on %s: %s", ext.egroup, node, exc)


def _classify(planned: list[Planned], policy: ContainerPolicy) -> None:
    """Holes, dedup ids, and compression of new extents (runs off the event loop)."""
    for pl in planned:
        if codec.is_zero(pl.raw):
            pl.extent_id = ""
        elif policy.dedup:
            pl.extent_id = "h" + codec.content_id(pl.raw)
        else:
            pl.encoded = codec.encode(pl.raw, policy)


async def _drain(tasks: set[asyncio.Task[None]]) -> None:
    if tasks:
        done, _ = await asyncio.wait(tasks)
        tasks.clear()
        for task in done:
            task.result()
