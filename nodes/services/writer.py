"""The write coordinator on this node: byte streams in, extents committed.

Theory of operation
-------------------
The byte stream is cut at extent boundaries. A piece that covers a whole extent
replaces it; a partial piece is merged into the extent's current bytes
(read-modify-write, under a per-extent lock on this node and with the extent id it read
as a precondition of the commit, so a concurrent writer elsewhere is detected and the
merge redone, never lost). Pieces are committed in batches of ``WRITE_BATCH_BYTES``:

1. all-zero extents become holes; with dedup, an extent whose content id (xxh3-128) is
   already stored in the container costs a reference, not bytes;
2. the rest are compressed (zstd, when it saves enough) and appended to this node's open
   extent group for the container on all RF replicas (claimed in metadata before its
   first byte), one fsync per replica per batch;
3. only then is one ``WriteExtents`` committed through Raft: data before metadata.

An append that fails on a replica abandons that extent group (it is sealed) and the
batch goes to a new group placed on healthy fault domains; if fewer than RF domains are
healthy the write fails with 503 rather than store fewer copies. A group is sealed once
full and once every batch appended to it has been answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import xxhash

from fabric import limits
from fabric.buggify import OFF as buggify_off
from fabric.buggify import Buggify
from fabric.config import ClusterConfig
from fabric.errors import (
    BadRequest,
    Conflict,
    FabricError,
    InsufficientStorage,
    Unavailable,
    from_code,
)
from fabric.extents import codec
from fabric.extents.policy import ContainerPolicy
from fabric.metadata.commands import MapWrite, NewEgroup, NewExtent, SealEgroups, WriteExtents
from fabric.metadata.records import VdiskRecord
from fabric.placement.rendezvous import NotEnoughDomains
from fabric.ports import Clock, Offload, PeerUnreachable
from nodes.services.catalog import Catalog
from nodes.services.metadata import MetadataService
from nodes.services.reader import ReadCoordinator
from nodes.services.replicas import ReplicaClient, ReplicaFull

log = logging.getLogger(__name__)


@dataclass
class OpenEgroup:
    record: NewEgroup
    size: int = 0
    claimed_at: float = 0.0
    """When its files were claimed in metadata (``RegisterIntents``), before any append."""
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


class WriteCoordinator:
    def __init__(
        self,
        node_id: str,
        config: ClusterConfig,
        clock: Clock,
        rng: Any,
        metadata: MetadataService,
        catalog: Catalog,
        replicas: ReplicaClient,
        reader: ReadCoordinator,
        offload: Offload,
        dedup_key: bytes | None = None,
        spawn: Callable[[Coroutine[Any, Any, Any], str], Any] | None = None,
        buggify: Buggify = buggify_off,
    ) -> None:
        """``spawn`` starts a task that dies with the node: only the broken
        ``[debug] ack_before_commit`` mode uses it, for the commits it leaves behind."""
        self.node_id = node_id
        self.buggify = buggify
        self.ack_before_commit = config.debug.ack_before_commit
        assert spawn is not None or not self.ack_before_commit, "ack_before_commit needs spawn"
        self._spawn = spawn
        self.dedup_key = dedup_key
        """Keys content ids (``fabric.extents.codec.content_id``); None: unkeyed ids."""
        self.clock = clock
        self.rng = rng
        self.metadata = metadata
        self.catalog = catalog
        self.replicas = replicas
        self.reader = reader
        self.offload = offload
        self.extent_bytes = config.extent_bytes
        self._open: dict[str, OpenEgroup] = {}
        self._to_seal: dict[str, set[str]] = {}
        self._spares: dict[str, list[OpenEgroup]] = {}
        """Groups claimed ahead, per container, not yet opened."""
        self._append_locks: dict[str, asyncio.Lock] = {}
        self._stripes = [asyncio.Lock() for _ in range(limits.WRITE_LOCK_STRIPES)]
        self.stats = WriteStats()

    # --- write ------------------------------------------------------------------------------

    async def write(self, ref: str, offset: int, length: int, chunks: AsyncIterator[bytes]) -> int:
        """Store ``length`` bytes from ``chunks`` at ``offset``; return bytes written."""
        await self.metadata.read_index()
        vd = self.catalog.vdisk(ref)
        self.catalog.check_range(vd, offset, length)
        written = await self._write_pieces(vd, self._pieces(offset, length, chunks))
        if written != length:
            raise BadRequest(f"body ended after {written} of {length} bytes")
        return written

    async def write_extents(self, ref: str, first: int, extents: list[bytes]) -> int:
        """Store whole extents ``first``, ``first + 1``, ... (the last may be the vdisk's
        short tail): the image service's path, with no re-cutting of the bytes.

        Its caller made the vdisk through this node, so this node's state has it: no read
        index (a round trip to the leader) per call; the commit checks the vdisk anyway."""
        try:
            vd = self.catalog.vdisk(ref)
        except FabricError:
            await self.metadata.read_index()
            vd = self.catalog.vdisk(ref)
        self.catalog.check_range(vd, first * self.extent_bytes, sum(map(len, extents)))

        async def pieces() -> AsyncIterator[Piece]:
            for i, data in enumerate(extents):
                yield Piece(first + i, 0, data)

        return await self._write_pieces(vd, pieces())

    async def _write_pieces(self, vd: VdiskRecord, pieces: AsyncIterator[Piece]) -> int:
        """Commit pieces in batches, ``limits.WRITE_BATCHES_IN_FLIGHT`` at once; bytes written."""
        policy = self.catalog.policy(vd.container)
        inflight: set[asyncio.Task[None]] = set()
        batch: list[Piece] = []
        batch_bytes = 0
        written = 0
        try:
            async for piece in pieces:
                batch.append(piece)
                batch_bytes += len(piece.data)
                written += len(piece.data)
                if batch_bytes >= limits.WRITE_BATCH_BYTES:
                    await self._launch(inflight, vd, policy, batch)
                    batch, batch_bytes = [], 0
            if batch:
                await self._launch(inflight, vd, policy, batch)
            await _drain(inflight)
            await self._seal_filled(vd.container)
        finally:
            for task in inflight:
                task.cancel()
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: the first failure is the one raised
        return written

    async def _launch(
        self,
        inflight: set[asyncio.Task[None]],
        vd: VdiskRecord,
        policy: ContainerPolicy,
        batch: list[Piece],
    ) -> None:
        while len(inflight) >= limits.WRITE_BATCHES_IN_FLIGHT:
            done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            inflight.difference_update(done)
            _raise_first(done)  # a failed batch fails the write now
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
            inner = pos % e
            if not buf and len(chunk) == min(e - inner, end - pos):
                # The stream is cut at extent boundaries already: no copy.
                yield Piece(pos // e, inner, chunk)
                pos += len(chunk)
                continue
            buf += chunk
            while buf:
                inner = pos % e
                want = min(e - inner, end - pos)
                if want <= 0 or len(buf) < want:
                    break
                yield Piece(pos // e, inner, bytes(memoryview(buf)[:want]))
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
            for attempt in range(limits.WRITE_RETRIES):
                if attempt:
                    self.stats.retries += 1
                    # Random backoff: writers colliding on one extent spread out.
                    await self.clock.sleep(
                        self.rng.uniform(0, limits.WRITE_RETRY_BACKOFF_S * 2 ** min(attempt, 6))
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
        return xxhash.xxh3_64_intdigest(f"{vdisk_id}/{index}".encode()) % limits.WRITE_LOCK_STRIPES

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
            old = await self.reader.fetch(vd, p.index) if old_id else None
            raw = bytearray(old if old is not None else bytes(ext_len))
            raw[p.inner : p.inner + len(p.data)] = p.data
            planned.append(Planned(p.index, old_id, raw=bytes(raw)))
        # One extent per call, all at once: hashing and compression release the GIL.
        await asyncio.gather(
            *(self.offload(_classify, pl, policy, self.dedup_key) for pl in planned)
        )
        container = vd.container
        storing: dict[str, Planned] = {}
        for pl in planned:
            if pl.encoded is not None or not pl.extent_id:
                continue
            if self.metadata.state.extent(container, pl.extent_id) or pl.extent_id in storing:
                self.stats.dedup_hits += 1
                continue
            # A new content id: store its bytes (once, however often the batch repeats it).
            storing[pl.extent_id] = pl

        async def encode(pl: Planned) -> None:
            pl.encoded = await self.offload(codec.encode, pl.raw, policy)

        # At once: compression releases the GIL, so the extents of a batch share the cores.
        await asyncio.gather(*map(encode, storing.values()))
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
        if delay := self.buggify.delay_s("write.slow-commit"):
            await self.clock.sleep(delay)
        maps = tuple(MapWrite(pl.index, pl.expect, pl.extent_id) for pl in planned)
        self.stats.holes += sum(1 for pl in planned if not pl.extent_id)
        cmd = WriteExtents(vd.id, egroups, tuple(extents), maps, seal, claimed=True)
        if self.ack_before_commit:
            assert self._spawn is not None
            self._spawn(self._commit_unawaited(vd, cmd, opened), "debug-commit")
            return None  # broken on purpose: answered before the metadata commit
        return await self._commit(vd, cmd, opened)

    async def _commit_unawaited(
        self, vd: VdiskRecord, cmd: WriteExtents, opened: OpenEgroup | None
    ) -> None:
        """``[debug] ack_before_commit``: the commit of a batch already answered."""
        try:
            refused = await self._commit(vd, cmd, opened)
        except (FabricError, PeerUnreachable) as exc:
            refused = (type(exc).__name__, str(exc))
        if refused is not None:
            log.warning("debug ack_before_commit: an acknowledged batch was refused: %s", refused)

    async def _commit(
        self, vd: VdiskRecord, cmd: WriteExtents, opened: OpenEgroup | None
    ) -> tuple[str, str] | None:
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
        """Append a batch to the container's open group on all its replicas.

        The range is reserved under the lock and the bytes sent outside it, so the next
        batch's transfer overlaps this one's write and fsync (the replicas put each batch
        at its reserved offset, whatever order they arrive in)."""
        lock = self._append_locks.setdefault(container, asyncio.Lock())
        size = sum(map(len, payloads))
        excluded: set[str] = set()
        full: list[str] = []
        for attempt in range(3):
            async with lock:
                eg = self._open.get(container)
                if eg is None or set(eg.record.replicas) & excluded:
                    try:
                        eg = await self._next_egroup(container, rf, excluded)
                    except NotEnoughDomains as exc:
                        if full:  # the domains left out are the full ones
                            raise InsufficientStorage(
                                f"container {container!r}: no room on {rf} fault domains "
                                f"({'; '.join(full)})"
                            ) from exc
                        raise
                at = eg.size
                eg.size += size
                eg.unanswered += 1
                if eg.size >= limits.EGROUP_MAX_BYTES:
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
            try:
                # Only a first attempt: the point exercises moving on, not giving up.
                if attempt == 0 and self.buggify.fires("write.replica-timeout"):
                    raise PeerUnreachable(eg.record.replicas[-1], "BUGGIFY: append unanswered")
                offsets = await self.replicas.append_replicas(eg.record, payloads, at)
            except (PeerUnreachable, FabricError) as exc:
                log.warning("append to extent group %s failed: %s", eg.record.egid, exc)
                eg.unanswered -= 1
                excluded.add(getattr(exc, "peer", "") or "")
                if isinstance(exc, ReplicaFull):
                    full.append(str(exc))
                self._abandon(container, eg)
                continue
            seal = tuple(sorted(self._to_seal.pop(container, set())))
            return eg, offsets, seal
        if full:
            raise InsufficientStorage(
                f"container {container!r}: no room for {len(payloads)} extents on {rf} "
                f"replicas ({'; '.join(full)})"
            )
        raise Unavailable(f"could not store {len(payloads)} extents on {rf} healthy replicas")

    def _abandon(self, container: str, eg: OpenEgroup) -> None:
        if self._open.get(container) is eg:
            del self._open[container]
        self._to_seal.setdefault(container, set()).add(eg.record.egid)

    async def _next_egroup(self, container: str, rf: int, excluded: set[str]) -> OpenEgroup:
        """The container's next open group, claimed before its first byte.

        Groups are placed and claimed ``limits.CLAIM_AHEAD_GROUPS`` at a time, in one
        commit: a long write then waits for a claim once per that many groups instead of
        stalling every batch in flight behind a commit at each new group. A spare claim
        too old to be sure it is still standing (the leader expires an idle claim after
        ``limits.CLAIM_TIMEOUT_S``) or on an excluded node is left to expire."""
        now = self.clock.now()
        spares = self._spares.setdefault(container, [])
        while spares:
            eg = spares.pop(0)
            fresh = now - eg.claimed_at < limits.CLAIM_TIMEOUT_S / 4
            if fresh and not set(eg.record.replicas) & excluded:
                self._open[container] = eg
                return eg
        count = 1 if excluded else limits.CLAIM_AHEAD_GROUPS
        groups = [
            OpenEgroup(self.catalog.place_egroup(container, rf, excluded)) for _ in range(count)
        ]
        await self.replicas.claim_many([g.record for g in groups])
        for g in groups:
            g.claimed_at = now
        spares.extend(groups[1:])
        self._open[container] = groups[0]
        return groups[0]


def _classify(pl: Planned, policy: ContainerPolicy, dedup_key: bytes | None) -> None:
    """A hole, a dedup id, or (without dedup) the stored form (runs off the event loop)."""
    if codec.is_zero(pl.raw):
        pl.extent_id = ""
    elif policy.dedup:
        pl.extent_id = codec.content_id(pl.raw, dedup_key)
    else:
        pl.encoded = codec.encode(pl.raw, policy)


async def _drain(tasks: set[asyncio.Task[None]]) -> None:
    if tasks:
        done, _ = await asyncio.wait(tasks)
        tasks.clear()
        _raise_first(done)


def _raise_first(done: set[asyncio.Task[None]]) -> None:
    """Raise the first failure among finished tasks, every one's outcome retrieved (an
    exception nobody retrieved is logged at garbage collection, wherever that runs)."""
    failures = [e for t in done if not t.cancelled() and (e := t.exception()) is not None]
    if failures:
        raise failures[0]
