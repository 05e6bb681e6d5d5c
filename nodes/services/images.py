"""The image service: disk and ISO images in, converted to raw on the fly, stored as vdisks.

Theory of operation
-------------------
An image is a catalog record in the replicated metadata (``image/<id>``, its name in
``image-name/<name>``) plus, once it has bytes, a vdisk in its container. Bytes arrive
either as an upload (``PUT /api/v1/images/{id}/file``) or from a URL (an import task,
``task/<id>``), in any supported source format, and take one pass:

    source bytes --> ReadAhead (receives while the rest works)
                 --> sha256 (worker thread)
                 --> Decoder (worker thread; fabric/images/assembly.py): format reader
                     (detected from the content) --> raw runs --> whole extents
                 --> ExtentStore --> WriteCoordinator.write_extents (a few batches in
                     flight while the next chunks decode)

so nothing is ever staged as a whole: memory holds a few extents and the reader's
tables; data a format places before its tables goes to a bounded spill file. The event
loop only moves chunks and batches; every byte-level step runs in worker threads
(zlib, hashlib and zstd release the GIL), and the bytes are copied once, when the
pieces of an extent are joined. The image
turns ACTIVE only after the whole source was read, the reader found it sound, and the
optional checksum matched, and the content is of the format and type its creator
declared, if any (``allowed_formats``: the decoder refuses other content at its first
bytes). Any failure turns it ERROR with the reason and deletes its vdisk, so no
half-written image is readable and its extents are collected; the ERROR record keeps
the reason but not the name, which the next image of that name takes over. An ingest
owned by a node that dies is failed by the leader's scan (``fail_orphans``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from fabric import limits
from fabric.buggify import OFF as buggify_off
from fabric.buggify import Buggify
from fabric.errors import (
    BadRequest,
    Conflict,
    FabricError,
    NotFound,
    Unavailable,
    Unprocessable,
    from_code,
)
from fabric.extents.policy import ContainerPolicy, check_name
from fabric.images.assembly import Decoder, ExtentBatch, Step
from fabric.images.base import ImageError, ReaderLimits, Run, Spill
from fabric.images.declared import DISK_FORMATS, FORMATS, ISO_MAGIC, FormatMismatch
from fabric.metadata import keys
from fabric.metadata.commands import (
    CreateImage,
    DeleteImage,
    ExpireImage,
    ResizeVdisk,
    UpdateImage,
    UpdateTask,
)
from fabric.metadata.records import Checksum, ImageRecord, TaskRecord, VdiskRecord, to_json
from fabric.metadata.state import MetadataState
from fabric.ports import Clock, Fetcher, SourceDropped, SourceFailed
from fabric.urlguard import UrlGuard, guard_for, scrub, shown_url
from nodes.services.catalog import Catalog
from nodes.services.membership import Membership
from nodes.services.metadata import MetadataService
from nodes.services.quiet import QuietClock
from nodes.services.writer import WriteCoordinator

log = logging.getLogger(__name__)

DEFAULT_CONTAINER = "images"


class FileSpill:
    """The readers' spill area in a temporary file: bounded, deleted when closed."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        # Lives as long as one ingest; close() ends it (the OS deletes it even on a crash).
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        self._index: dict[int, tuple[int, int]] = {}
        self._held = 0

    def put(self, key: int, data: bytes) -> None:
        pos = self._file.seek(0, os.SEEK_END)
        self._file.write(data)
        self._index[key] = (pos, len(data))
        self._held += len(data)

    def take(self, key: int) -> bytes:
        pos, length = self._index.pop(key)
        self._file.seek(pos)
        self._held -= length
        return self._file.read(length)

    def keys(self) -> list[int]:
        return sorted(self._index)

    @property
    def held_bytes(self) -> int:
        return self._held

    def close(self) -> None:
        self._file.close()


class ExtentStore:
    """Stores an ingest's extent batches in the background, a bounded number at once.

    A late run (for an extent already handed out) is merged into the stored extent once
    every batch before it has landed, so the merge reads what the batch wrote.
    """

    def __init__(
        self, writer: WriteCoordinator, vdisk_id: str, size: int, slots: asyncio.Semaphore
    ) -> None:
        self.writer = writer
        self.vdisk_id = vdisk_id
        self.size = size
        self._slots = slots
        self._inflight: set[asyncio.Task[Any]] = set()

    async def put(self, batch: ExtentBatch) -> None:
        """Start storing ``batch``; waits only while this ingest's window, or the node's
        window shared by all ingests (``slots``), is full."""
        await self._drain(limits.INGEST_WRITES_IN_FLIGHT - 1)
        await self._slots.acquire()
        task = asyncio.ensure_future(
            self.writer.write_extents(self.vdisk_id, batch.first, batch.extents)
        )
        task.add_done_callback(lambda _: self._slots.release())
        self._inflight.add(task)

    async def merge(self, run: Run) -> None:
        await self._drain(0)
        data = bytes(run.data)

        async def one() -> AsyncIterator[bytes]:
            yield data

        await self.writer.write(self.vdisk_id, run.offset, len(data), one())

    async def drain(self) -> None:
        await self._drain(0)

    async def _drain(self, keep: int) -> None:
        while len(self._inflight) > keep:
            done, _ = await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                self._inflight.discard(task)
                task.result()  # a failed write fails the ingest now

    def cancel(self) -> None:
        for task in self._inflight:
            task.cancel()


class ReadAhead:
    """Receives a stream's chunks ahead of the ingest, up to ``limit_bytes`` held.

    The upload keeps flowing while a step decodes; the ingest takes all that arrived
    meanwhile in one go (one worker-thread hop for many chunks).
    """

    def __init__(self, chunks: AsyncIterator[bytes], limit_bytes: int) -> None:
        self._chunks = chunks
        self._limit = limit_bytes
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._ended = False
        self._error: BaseException | None = None
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._task = asyncio.ensure_future(self._receive())

    async def _receive(self) -> None:
        try:
            async for chunk in self._chunks:
                self._held.append(chunk)
                self._held_bytes += len(chunk)
                self._arrived.set()
                while self._held_bytes >= self._limit:
                    self._room.clear()
                    await self._room.wait()
        except BaseException as exc:
            # Handed to the ingest by take(): the failure is the upload's, not this task's.
            self._error = exc
        finally:
            self._ended = True
            self._arrived.set()

    async def take(self) -> list[bytes]:
        """Every chunk received and not yet taken (at least one); [] at the end."""
        while not self._held and not self._ended:
            self._arrived.clear()
            await self._arrived.wait()
        if not self._held and self._error is not None:
            raise self._error
        chunks, self._held, self._held_bytes = self._held, [], 0
        self._room.set()
        return chunks

    def close(self) -> None:
        self._task.cancel()


class ImageService:
    def __init__(
        self,
        node_id: str,
        clock: Clock,
        rng: Any,
        metadata: MetadataService,
        catalog: Catalog,
        writer: WriteCoordinator,
        offload: Callable[..., Any],
        spill_factory: Callable[[], Spill],
        reader_limits: ReaderLimits,
        fetcher: Fetcher | None,
        membership: Membership,
        import_allow: Sequence[str] = (),
        pending_ttl_s: float = limits.PENDING_IMAGE_TTL_S,
        buggify: Buggify = buggify_off,
    ) -> None:
        self.node_id = node_id
        self.buggify = buggify
        self.clock = clock
        self.rng = rng
        self.metadata = metadata
        self.catalog = catalog
        self.writer = writer
        self.offload = offload
        self.spill_factory = spill_factory
        self.limits = reader_limits
        self.fetcher = fetcher
        self.membership = membership
        self.import_allow = tuple(import_allow)
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.write_slots = asyncio.Semaphore(limits.INGEST_NODE_WRITES_IN_FLIGHT)
        """Extent batches being stored, all ingests together: bounds the node's memory."""
        self.pending_ttl_s = pending_ttl_s
        self._unclaimed = QuietClock()
        """PENDING images no upload claimed: how long each record has stayed unchanged."""
        self.expired = 0

    @property
    def converting(self) -> int:
        """Uploads and imports holding one of this node's ``MAX_INGESTS`` slots."""
        return len(self._busy)

    def guard(self) -> UrlGuard:
        """URL import's guard: the config's allow-list, and the nodes of the cluster now
        (those added at runtime too)."""
        nodes = [(n.id, n.host, n.port) for n in self.membership.nodes()]
        return guard_for(self.import_allow, nodes)

    # --- catalog ----------------------------------------------------------------------------
    def image(self, ref: str) -> ImageRecord:
        record = self.metadata.state.image_by_ref(ref)
        if record is None:
            raise NotFound(f"no image {ref!r}")
        return record

    async def get(self, ref: str) -> dict[str, Any]:
        await self.metadata.read_index()
        return public(self.image(ref))

    async def listing(self) -> list[dict[str, Any]]:
        await self.metadata.read_index()
        return [public(image) for image in self.metadata.state.images()]

    async def task(self, task_id: str) -> dict[str, Any]:
        await self.metadata.read_index()
        record = self.metadata.state.task(task_id)
        if record is None:
            raise NotFound(f"no task {task_id!r}")
        return to_json(record)

    async def update_image(
        self, image_id: str, expect: str = "PENDING", **fields: Any
    ) -> ImageRecord:
        """Compare-and-set: change the image if it is still in state ``expect``."""
        current = self.metadata.state.image(image_id)
        if current is None:
            raise NotFound(f"image {image_id} is gone")
        record = replace(current, **fields)
        result = await self.metadata.propose(UpdateImage(record, expect))
        if not result.ok:
            raise from_code(result.code, result.message)
        return record

    async def update_task(self, task_id: str, **fields: Any) -> TaskRecord:
        current = self.metadata.state.task(task_id)
        if current is None:
            raise NotFound(f"task {task_id} is gone")
        record = replace(current, **fields)
        result = await self.metadata.propose(UpdateTask(record, "RUNNING"))
        if not result.ok:
            raise from_code(result.code, result.message)
        return record

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = check_name("image", body.get("name"))
        declared, given_type = declared_kind(body)
        url = body.get("source_url")
        if url is not None:
            check_url(url)
            refusal = self.guard().check_literal(url)
            if refusal is not None:
                raise BadRequest(refusal.message)
            if self.fetcher is None:
                raise BadRequest("this node's runtime has no HTTP client for URL import")
            self._check_capacity()
        checksum = parse_checksum(body.get("checksum"))
        await self.metadata.read_index()
        container = body.get("container") or await self._default_container()
        if not isinstance(container, str) or self.metadata.state.container(container) is None:
            raise NotFound(f"no container {container!r}")
        await self._clear_failed(name)
        image_id = f"img-{self.rng.getrandbits(64):016x}"
        task: TaskRecord | None = None
        if url is not None:
            task = TaskRecord(
                id=f"task-{self.rng.getrandbits(64):016x}",
                kind="image_import",
                image_id=image_id,
                state="RUNNING",
                node=self.node_id,
            )
        record = ImageRecord(
            id=image_id,
            name=name,
            container=container,
            state="PENDING",
            image_type=given_type or ("ISO" if declared == "iso" else "DISK"),
            created=self.clock.wall(),
            source_url=None if url is None else shown_url(url),
            checksum=checksum,
            node=self.node_id if task else None,
            task_id=task.id if task else None,
            declared_format=declared,
            type_declared=given_type is not None,
        )
        result = await self.metadata.propose(CreateImage(record, task))
        if not result.ok:
            raise from_code(result.code, result.message)
        if url is not None:
            self._busy.add(image_id)  # holds its slot until the import ends
            # The URL as given (credentials, query) lives only in this task's memory.
            job = asyncio.ensure_future(self._import(image_id, url))
            self._tasks.add(job)
            job.add_done_callback(self._tasks.discard)
        return public(record)

    async def _clear_failed(self, name: str) -> None:
        """An image of this name that ended in ERROR gives way to the new one; if it
        still holds a vdisk (a failure that could not drop it), that goes first."""
        image_id = self.metadata.state.value(keys.image_name_key(name))
        old = self.metadata.state.image(image_id) if isinstance(image_id, str) else None
        if old is not None and old.state == "ERROR" and old.vdisk_id:
            await self.delete(old.id)

    def _check_capacity(self) -> None:
        if len(self._busy) >= limits.MAX_INGESTS:
            raise Unavailable(
                f"{self.node_id} is already converting {limits.MAX_INGESTS} images; retry later "
                "or send this one to another node"
            )

    async def _default_container(self) -> str:
        if self.metadata.state.container(DEFAULT_CONTAINER) is None:
            domains = len(set(self.catalog.fault_domains().values()))
            policy = ContainerPolicy(rf=min(2, domains), dedup=True, compression="zstd")
            try:
                await self.catalog.create_container(DEFAULT_CONTAINER, policy)
            except Conflict:
                pass  # another node made it first
        return DEFAULT_CONTAINER

    async def delete(self, ref: str) -> None:
        await self.metadata.read_index()
        image = self.image(ref)
        if image.id in self._busy:
            raise Conflict(f"image {image.name!r} is being written; wait for it to end")
        if image.vdisk_id:
            await self._drop_vdisk(image.vdisk_id)
        result = await self.metadata.propose(DeleteImage(image.id))
        if not result.ok:
            raise from_code(result.code, result.message)

    async def _drop_vdisk(self, vdisk_id: str) -> None:
        try:
            await self.catalog.delete_vdisk(vdisk_id)
        except NotFound:
            pass  # already gone

    # --- bytes in ---------------------------------------------------------------------------
    async def upload(self, ref: str, chunks: AsyncIterator[bytes]) -> dict[str, Any]:
        await self.metadata.read_index()
        image = self.image(ref)
        if image.state != "PENDING" or image.source_url or image.vdisk_id:
            raise Conflict(f"image {image.name!r} is {image.state}; upload into a new image")
        if image.id in self._busy:
            raise Conflict(f"image {image.name!r} is already being uploaded")
        self._check_capacity()
        image = await self.update_image(image.id, node=self.node_id)
        return await self._ingest(image, chunks, None)

    async def _ingest(
        self,
        image: ImageRecord,
        chunks: AsyncIterator[bytes],
        progress: Callable[[int], Any] | None,
    ) -> dict[str, Any]:
        self._busy.add(image.id)
        spill = self.spill_factory()
        ingest = Ingest(self, image, spill)
        try:
            done = await ingest.run(chunks, progress)
        except FormatMismatch as exc:
            reason = mismatch(image, exc)
            await ingest.fail(reason)
            raise Unprocessable(f"image refused: {reason}") from None
        except ImageError as exc:
            await ingest.fail(str(exc))
            raise Unprocessable(f"image refused: {exc}") from None
        except ChecksumMismatch as exc:
            await ingest.fail(str(exc))
            raise Unprocessable(str(exc)) from None
        except BaseException as exc:
            reason = (
                str(exc)
                if isinstance(exc, ImportFailed)
                else (f"ingest failed: {exc or type(exc).__name__}")
            )
            await asyncio.shield(ingest.fail(reason))
            raise
        finally:
            self._busy.discard(image.id)
            close = getattr(spill, "close", None)
            if close:
                close()
        return public(done)

    # --- URL import -------------------------------------------------------------------------
    async def _import(self, image_id: str, url: str) -> None:
        try:
            await self._run_import(image_id, url)
        finally:
            self._busy.discard(image_id)

    async def _run_import(self, image_id: str, url: str) -> None:
        image = self.image(image_id)
        assert image.task_id is not None and image.source_url is not None
        task_id = image.task_id
        last = [self.clock.now()]
        told: list[int | None] = [None]  # the size recorded so far

        async def progress(done: int, expected: int | None = None) -> None:
            # The size is recorded as soon as the source tells it, the rest now and then.
            if expected == told[0] and self.clock.now() - last[0] < limits.IMPORT_PROGRESS_EVERY_S:
                return
            last[0], told[0] = self.clock.now(), expected
            fields: dict[str, Any] = {"bytes_done": done}
            if expected:
                fields.update(
                    bytes_expected=expected, progress=round(min(done / expected, 0.999), 4)
                )
            try:
                await self.update_task(task_id, **fields)
            except FabricError as exc:
                log.info("progress of %s not recorded: %s", task_id, exc)

        assert self.fetcher is not None, "create() refuses URL imports without a fetcher"
        source = UrlSource(self.fetcher, self.clock, url, self.guard(), progress)
        try:
            await self._ingest(image, source.chunks(), None)
        except (FabricError, ImportFailed) as exc:
            message = exc.message if isinstance(exc, FabricError) else str(exc)
            await self._finish_task(task_id, "FAILED", error=scrub(message, url), **source.sizes())
            return
        except Exception as exc:
            log.exception("import of %s failed", image_id)
            await self._finish_task(task_id, "FAILED", error=scrub(str(exc), url), **source.sizes())
            return
        await self._finish_task(task_id, "SUCCEEDED", progress=1.0, **source.sizes())

    async def _finish_task(self, task_id: str, state: str, **fields: Any) -> None:
        try:
            await self.update_task(task_id, state=state, **fields)
        except FabricError as exc:
            log.warning("could not record the end of task %s: %s", task_id, exc)

    # --- the leader cleans up after dead nodes ----------------------------------------------
    async def fail_orphans(self) -> None:
        """PENDING images and RUNNING tasks owned by a DOWN node are failed cleanly.

        The ERROR is committed first, as a compare-and-set from PENDING: if the owner made
        the image ACTIVE meanwhile, the sweep is refused and leaves it (and its vdisk)
        alone; only a sweep that won deletes the vdisk.
        """
        state = self.metadata.state
        nodes = state.nodes()
        for image in [state.image(i) for i in sorted(state.idx.pending_images)]:
            if image is None or image.state != "PENDING" or not image.node:
                continue
            owner = nodes.get(image.node)
            if owner is None or owner.state != "DOWN":
                continue
            what = "import" if image.source_url else "upload"
            await Ingest(self, image, None).fail(
                f"node {image.node} serving the {what} went down; upload or import it again"
            )
            if image.task_id:
                await self._finish_task(
                    image.task_id, "FAILED", error=f"node {image.node} went down"
                )

    async def expire_pending(self) -> None:
        """PENDING images whose bytes never started arriving turn ERROR after the TTL.

        Only images no node converts and with no vdisk: an upload under way is bounded
        by the body idle limit, and one whose node died by ``fail_orphans``. The leader
        measures how long each record has stayed at its version; ``ExpireImage`` applies
        only at that version, so an upload that claims the image meanwhile wins.
        """
        state = self.metadata.state
        now = self.clock.now()
        waiting: list[tuple[str, int]] = []
        for image_id in sorted(state.idx.pending_images):
            image = state.image(image_id)
            if image is None or image.node or image.vdisk_id:
                continue
            waiting.append((image_id, state.version(keys.image_key(image_id))))
        self._unclaimed.keep_only(image_id for image_id, _ in waiting)
        expired = [
            (image_id, version)
            for image_id, version in waiting
            if self._unclaimed.quiet_for(image_id, version, now) >= self.pending_ttl_s
        ]
        reason = f"upload never arrived within {self.pending_ttl_s:g} s"
        for image_id, version in expired[: limits.EXPIRE_IMAGES_PER_PASS]:
            result = await self.metadata.propose(ExpireImage(image_id, version, reason))
            if result.ok:
                self.expired += 1
                log.info("image %s: %s", image_id, reason)


def _hash(hashes: list[Any], chunks: list[bytes]) -> None:
    for chunk in chunks:
        for h in hashes:
            h.update(chunk)


class ChecksumMismatch(Exception):
    pass


class ImportFailed(Exception):
    """The source URL could not deliver the image (HTTP error, stalled, dropped)."""


class Ingest:
    """One image's pass from source bytes to an ACTIVE (or ERROR) image."""

    def __init__(self, svc: ImageService, image: ImageRecord, spill: Spill | None) -> None:
        self.svc = svc
        self.image = image
        self.spill = spill
        self.vdisk_id: str | None = image.vdisk_id
        self.store: ExtentStore | None = None

    async def run(
        self, chunks: AsyncIterator[bytes], progress: Callable[[int], Any] | None
    ) -> ImageRecord:
        svc = self.svc
        assert self.spill is not None
        checksum = self.image.checksum
        hashes = {"sha256": hashlib.sha256()}
        if checksum and checksum.type != "sha256":
            hashes[checksum.type] = hashlib.new(checksum.type)
        decoder = Decoder(
            svc.limits,
            self.spill,
            svc.writer.extent_bytes,
            reorder_extents=limits.INGEST_REORDER_EXTENTS,
            batch_extents=limits.INGEST_BATCH_EXTENTS,
            bridge_extents=limits.INGEST_BRIDGE_EXTENTS,
            pin_limit_bytes=limits.INGEST_PINNED_BYTES,
            allowed=allowed_formats(self.image),
        )
        source = ReadAhead(chunks, limits.INGEST_READ_AHEAD_BYTES)
        source_bytes = 0
        hashing: asyncio.Future[None] | None = None
        try:
            while chunks_in := await source.take():
                source_bytes += sum(map(len, chunks_in))
                # The hashes of these chunks run in a worker thread beside their decoding.
                if hashing is not None:
                    await hashing
                hashing = asyncio.ensure_future(svc.offload(_hash, [*hashes.values()], chunks_in))
                decoder.feed(chunks_in)
                await self._decode(decoder)
            decoder.finish()
            await self._decode(decoder)
            if hashing is not None:
                await hashing
        finally:
            source.close()
            if hashing is not None:
                hashing.cancel()
        reader = decoder.reader
        assert reader is not None, "the decoder finished without a reader"
        size = reader.virtual_size
        assert size is not None, "a reader finished without a virtual size"
        store = self.store or await self._store(max(1, size))  # a vdisk has a byte at least
        await store.drain()
        if store.size != size:
            result = await svc.metadata.propose(ResizeVdisk(store.vdisk_id, size))
            if not result.ok:
                raise from_code(result.code, result.message)
        digest = hashes["sha256"].hexdigest()
        if checksum and hashes[checksum.type].hexdigest() != checksum.value:
            raise ChecksumMismatch(
                f"{checksum.type} of the source is {hashes[checksum.type].hexdigest()}, "
                f"expected {checksum.value}"
            )
        vd = svc.catalog.vdisk(store.vdisk_id)
        return await svc.update_image(
            self.image.id,
            state="ACTIVE",
            source_format=reader.format,
            virtual_size=size,
            padded_bytes=reader.padded_bytes,
            source_bytes=source_bytes,
            source_sha256=digest,
            logical_bytes=vd.logical_bytes,
            stored_bytes=stored_bytes(svc.metadata.state, vd),
            # Declared types were checked against the content: the type follows it.
            image_type="ISO" if reader.format == "iso" else "DISK",
            vdisk_id=store.vdisk_id,
            node=None,
        )

    async def _decode(self, decoder: Decoder) -> None:
        """Decode what the decoder was fed, a bounded step at a time in a worker thread,
        and start storing each step's extents while the next step decodes."""
        while True:
            step: Step = await self.svc.offload(decoder.step, limits.INGEST_PULL_BYTES)
            size = decoder.size_bytes  # known from the first run on
            if size is not None:
                # The vdisk exists (and the image names it) as soon as bytes convert.
                store = self.store or await self._store(size)
                for batch in step.batches:
                    if delay := self.svc.buggify.delay_s("image.slow-batch"):
                        await self.svc.clock.sleep(delay)
                    await store.put(batch)
                for run in step.late:
                    await store.merge(run)
            if not step.more:
                return

    async def _store(self, size: int) -> ExtentStore:
        """The image's vdisk, created at its first extent (or at the end, if it has none)."""
        svc = self.svc
        vd = await svc.catalog.create_vdisk(f"image-{self.image.id}", self.image.container, size)
        self.vdisk_id = vd.id
        await svc.update_image(self.image.id, vdisk_id=vd.id)
        self.store = ExtentStore(svc.writer, vd.id, size, svc.write_slots)
        return self.store

    async def fail(self, reason: str) -> None:
        """Turn the image ERROR (compare-and-set from PENDING), then drop what it wrote.

        If the image turned ACTIVE meanwhile (this is the leader's sweep and the owner
        finished first) it is left alone, vdisk and all.
        """
        svc = self.svc
        if self.store is not None:
            self.store.cancel()
        log.warning("image %s: %s", self.image.name, reason)
        try:
            await svc.update_image(
                self.image.id, state="ERROR", error=reason, vdisk_id=None, node=None
            )
        except FabricError as exc:
            log.warning("could not mark image %s ERROR: %s", self.image.id, exc)
        current = svc.metadata.state.image(self.image.id)
        if current is not None and current.state == "ACTIVE":
            return
        for vdisk_id in {self.vdisk_id, self.image.vdisk_id} - {None}:
            assert vdisk_id is not None
            await svc._drop_vdisk(vdisk_id)


class UrlSource:
    """Streams a URL through the runtime's fetcher, resuming with Range after a drop.

    Every request (each resume too) goes through ``guard``. Only ``shown`` (no
    credentials, no query values) reaches logs and error messages.
    """

    def __init__(
        self,
        fetcher: Fetcher,
        clock: Clock,
        url: str,
        guard: UrlGuard,
        progress: Callable[..., Any],
    ) -> None:
        self.fetcher = fetcher
        self.clock = clock
        self.url = url
        self.shown = shown_url(url)
        self.guard = guard
        self.progress = progress
        self.offset = 0
        self.expected: int | None = None

    def sizes(self) -> dict[str, int]:
        """The task's byte counts at the end: what was read of what the source said it
        would send (what was read, when it did not say)."""
        return {"bytes_done": self.offset, "bytes_expected": self.expected or self.offset}

    async def chunks(self) -> AsyncIterator[bytes]:
        drops = 0
        while True:
            try:
                async for chunk in self._request():
                    yield chunk
                return
            except SourceDropped as exc:
                drops += 1
                why = scrub(str(exc), self.url)
                if drops > limits.IMPORT_MAX_RESUMES:
                    raise ImportFailed(f"source failed {drops} times, last: {why}") from None
                log.info(
                    "import of %s interrupted at %d bytes (%s); resuming",
                    self.shown,
                    self.offset,
                    why,
                )
                await self.clock.sleep(limits.IMPORT_RESUME_BACKOFF_S * drops)
            except SourceFailed as exc:
                raise ImportFailed(scrub(str(exc), self.url)) from None

    async def _request(self) -> AsyncIterator[bytes]:
        async with self.fetcher.get(self.url, self.offset, self.guard) as (head, body):
            if self.offset and head.status != 206:
                raise ImportFailed(
                    f"source answered {head.status} to a Range request; cannot resume"
                )
            if head.status not in (200, 206):
                raise ImportFailed(f"source answered HTTP {head.status} {head.reason}")
            if head.content_length is not None and self.expected is None:
                self.expected = self.offset + head.content_length
            async for chunk in body:
                self.offset += len(chunk)
                await self.progress(self.offset, self.expected)
                yield chunk
        if self.expected is not None and self.offset < self.expected:
            raise SourceDropped(f"connection closed at {self.offset} of {self.expected} bytes")


def declared_kind(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """The source format and image type a request declares (None: not declared), once
    they agree with each other; whether the content agrees is for the ingest."""
    declared, given_type = body.get("source_format"), body.get("image_type")
    if declared is not None and declared not in FORMATS:
        raise BadRequest(f"source_format must be one of {', '.join(FORMATS)}")
    if given_type not in (None, "DISK", "ISO"):
        raise BadRequest("image_type must be DISK or ISO")
    if given_type == "ISO" and declared not in (None, "iso"):
        raise Unprocessable(
            f"image_type ISO is for ISO 9660 content, but source_format {declared} was declared"
        )
    if given_type == "DISK" and declared == "iso":
        raise Unprocessable(
            "source_format iso is an ISO 9660 image, but image_type DISK was declared"
        )
    return declared, given_type


def allowed_formats(image: ImageRecord) -> frozenset[str] | None:
    """The formats an image's content may have, from what its creator declared."""
    if image.declared_format is not None:
        return frozenset({image.declared_format})
    if image.type_declared:
        return frozenset({"iso"}) if image.image_type == "ISO" else DISK_FORMATS
    return None


def mismatch(image: ImageRecord, exc: FormatMismatch) -> str:
    """Why content is refused, naming what was declared and what was found."""
    if image.declared_format is not None:
        why = f"declared source_format {image.declared_format}, but the content is {exc.detected}"
        return (
            f"{why} (an ISO 9660 image has {ISO_MAGIC})" if image.declared_format == "iso" else why
        )
    if image.image_type == "ISO":
        return (
            f"declared image_type ISO, but the content is {exc.detected}, not ISO 9660 "
            f"({ISO_MAGIC} is missing)"
        )
    return (
        "declared image_type DISK, but the content is an ISO 9660 image (iso); "
        "declare image_type ISO or leave it out"
    )


def stored_bytes(state: MetadataState, vd: VdiskRecord) -> int:
    """An image's data as stored, compressed and before replicas: each distinct extent
    its vdisk maps counted once, as a container's ``stored_bytes`` counts its unique
    extents (extents shared with other images are counted in full here too)."""
    ids = set(state.block_map(vd.id).values())
    return sum(ext.stored_len for eid in ids if (ext := state.extent(vd.container, eid)))


def check_url(url: Any) -> str:
    if not isinstance(url, str):
        raise BadRequest("source_url must be a string")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise BadRequest("source_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadRequest(f"source_url must be an http(s) URL, not {shown_url(url)!r}")
    return url


def parse_checksum(raw: Any) -> Checksum | None:
    if raw is None:
        return None
    if isinstance(raw, str) and ":" in raw:
        kind, value = raw.split(":", 1)
        raw = {"type": kind, "value": value}
    if not isinstance(raw, dict) or raw.get("type") not in ("sha256", "sha1"):
        raise BadRequest('checksum must be {"type": "sha256"|"sha1", "value": HEX}')
    value = str(raw.get("value", "")).lower()
    want = 64 if raw["type"] == "sha256" else 40
    if len(value) != want or any(c not in "0123456789abcdef" for c in value):
        raise BadRequest(f"checksum value must be {want} hex digits")
    return Checksum(raw["type"], value)


_PUBLIC = (
    "id",
    "name",
    "container",
    "state",
    "image_type",
    "source_format",
    "virtual_size",
    "source_bytes",
    "logical_bytes",
    "stored_bytes",
    "padded_bytes",
    "declared_format",
    "source_sha256",
    "error",
    "source_url",
    "checksum",
    "created",
    "task_id",
)


def public(image: ImageRecord) -> dict[str, Any]:
    record = to_json(image)
    return {k: record[k] for k in _PUBLIC}
