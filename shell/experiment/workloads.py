"""The clients of an experiment: each runs operations against the cluster and records
every one of them as a ``fabric.history.Op``.

What a client can know decides the outcome (``fabric.history``):

* an answer: ``ok``; a 4xx answer: ``fail`` (the fabric refused it, nothing changed);
* a 5xx answer, a timeout, a connection that broke after the request went out: ``unknown``
  (it may still take effect); a connection refused by every node: ``fail``;
* a read changes nothing, so a read without an answer is simply ``fail``.

Each client (a *process* of the history) runs one operation at a time. With a ``rate``
the clients pace their starts to it (a client that falls behind starts its next one at
once); without, each starts the next as soon as the last ended (closed loop).

kv clients talk to one node per request (a ``FabricClient`` per node, rotated by the
workload itself): the shared client would send a PUT that broke off to the next node
again, and a compare-and-set applied twice could be recorded as refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from fabric.history import Op
from fabric.scenario import WorkloadSpec
from shell.client import ApiError, BrokenStream, Unreachable
from shell.experiment.api import ClusterApi

READ_KINDS = frozenset({"read", "kv-read", "download"})
KV_VALUES = 5
"""kv values are 0..4: small, so compare-and-set succeeds often enough to matter."""
TASK_POLL_S = 0.2
TIMED_OUT = "timed out"
CAS_MISMATCH = "cas: the value is"


ZERO = "zero"
"""What a read of a block never written records (``fabric.checkers.blocks.INITIAL``)."""


def digest(data: bytes) -> str:
    """The value a block operation records: sha256 of the bytes (hex); all zeros: ZERO."""
    if data.count(0) == len(data):
        return ZERO
    return hashlib.sha256(data).hexdigest()


class RunClock:
    """Seconds since the run started, on ``source`` (the monotonic clock for ``fabric
    run``; the simulator's virtual time for ``fabric sim``)."""

    def __init__(self, source: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.t0 = source()

    def start(self) -> None:
        """The run's time starts now."""
        self.t0 = self.source()

    def now(self) -> float:
        return self.source() - self.t0


class NoEffect(Exception):
    """An operation stopped before anything it does could reach the cluster."""


@dataclass
class Recorder:
    clock: RunClock
    ops: list[Op] = field(default_factory=list)
    _next_process: int = 0

    def process(self) -> int:
        self._next_process += 1
        return self._next_process

    async def record(
        self,
        process: int,
        kind: str,
        key: str,
        value: Any,
        extra: dict[str, Any],
        call: Callable[[], Awaitable[Any]],
        timeout_s: float,
    ) -> Op:
        """Run ``call`` as one operation. ``call`` returns the value read (read kinds), or
        anything (writes keep ``value``); it may add to ``extra``."""
        invoke = self.clock.now()
        outcome, error = "ok", ""
        try:
            # Not wait_for: on Python 3.11 it drops a cancel that arrives as the call ends,
            # and a client the runner stops would then run on for good.
            async with asyncio.timeout(timeout_s):
                result = await call()
            if kind in READ_KINDS:
                value = result
        except asyncio.CancelledError:
            # The run ended with this operation in flight: it may still take effect.
            self._add(process, kind, key, value, invoke, "unknown", "run ended", extra)
            raise
        except Exception as exc:
            outcome, error = classify(exc)
            if kind in READ_KINDS:
                outcome, value = "fail", None
        return self._add(process, kind, key, value, invoke, outcome, error, extra)

    def _add(
        self,
        process: int,
        kind: str,
        key: str,
        value: Any,
        invoke: float,
        outcome: str,
        error: str,
        extra: dict[str, Any],
    ) -> Op:
        complete = max(invoke, self.clock.now())
        op = Op(process, kind, key, value, invoke, complete, outcome, error[:300], extra)
        self.ops.append(op)
        return op


def classify(exc: BaseException) -> tuple[str, str]:
    """(outcome, error) of an operation that raised ``exc``."""
    if isinstance(exc, NoEffect):
        return "fail", str(exc)
    if isinstance(exc, ApiError):
        return ("unknown" if exc.status >= 500 else "fail"), f"HTTP {exc.status} {exc.code}"
    if isinstance(exc, Unreachable):
        return ("unknown" if exc.maybe_sent else "fail"), str(exc)
    if isinstance(exc, TimeoutError):
        return "unknown", TIMED_OUT
    if isinstance(exc, BrokenStream | aiohttp.ClientError | OSError):
        return "unknown", str(exc) or type(exc).__name__
    raise exc  # a bug of ours: the run stops and says so


@dataclass
class Context:
    """What every workload gets from the runner."""

    recorder: Recorder
    client: ClusterApi
    """Knows every node; moves on when one fails."""
    node_clients: list[ClusterApi]
    """One per node, for operations that must not be sent twice (kv)."""
    seed: int
    run_id: str
    workdir: str
    import_base_url: str = ""
    """The runner's source server (``/img/NAME``, ``/flaky/NAME?drop=P``)."""
    written: dict[str, set[int]] = field(default_factory=dict)
    """vdisk -> blocks a write was invoked on (readers read only those)."""
    block_bytes: dict[str, int] = field(default_factory=dict)


async def pace(ctx: Context, spec: WorkloadSpec, i: int, started: float) -> None:
    """Wait for the ``i``-th start of one client of an open-loop workload."""
    if spec.rate <= 0:
        return
    due = started + i * spec.concurrency / spec.rate
    wait = due - ctx.recorder.clock.now()
    if wait > 0:
        await asyncio.sleep(wait)


# --- setup (outside the history) ------------------------------------------------------------
async def setup(ctx: Context, spec: WorkloadSpec) -> list[str]:
    """What the workload's clients need before the clock runs: their vdisks."""
    if spec.kind != "vdisk-writer":
        return []
    names = []
    for p in range(spec.concurrency):
        name = f"{spec.name}-{ctx.run_id}-{p}"
        await ctx.client.create_vdisk(name, spec.container, spec.vdisk_bytes)
        ctx.written[name] = set()
        ctx.block_bytes[name] = spec.block_bytes
        names.append(name)
    return names


# --- the clients ----------------------------------------------------------------------------
async def run_client(ctx: Context, spec: WorkloadSpec, index: int, vdisks: list[str]) -> None:
    """One client of ``spec``, until cancelled."""
    process = ctx.recorder.process()
    rng = random.Random(f"{ctx.seed}:{spec.name}:{index}")
    started = ctx.recorder.clock.now()
    match spec.kind:
        case "vdisk-writer":
            step = _writer(ctx, spec, process, rng, vdisks[index])
        case "vdisk-reader":
            step = _reader(ctx, spec, process, rng)
        case "kv-cas":
            step = _kv(ctx, spec, process, rng, index)
        case "image-upload":
            step = _upload(ctx, spec, process, rng, index)
        case "image-import":
            step = _import(ctx, spec, process, rng, index)
        case _:
            raise AssertionError(f"unknown workload kind {spec.kind!r}")
    i = 0
    while True:
        await pace(ctx, spec, i, started)
        await step(i)
        i += 1


Step = Callable[[int], Awaitable[None]]
STAMP_BYTES = 16


def block_payload(rng: random.Random, spec: WorkloadSpec) -> bytes:
    """One block for a writer: random bytes, or a random stamp repeated (``payload``)."""
    if spec.payload == "stamped":
        reps, rest = divmod(spec.block_bytes, STAMP_BYTES)
        stamp = rng.randbytes(STAMP_BYTES)
        return stamp * reps + stamp[:rest]
    return rng.randbytes(spec.block_bytes)


def _writer(ctx: Context, spec: WorkloadSpec, process: int, rng: random.Random, vdisk: str) -> Step:
    blocks = spec.vdisk_bytes // spec.block_bytes
    rec = ctx.recorder

    async def step(i: int) -> None:
        block = i % blocks if spec.pattern == "sequential" else rng.randrange(blocks)
        data = block_payload(rng, spec)
        offset = block * spec.block_bytes
        key = f"{vdisk}/{block}"
        extra = {"workload": spec.name, "bytes": len(data), "offset": offset}
        ctx.written[vdisk].add(block)

        async def write() -> None:
            await ctx.client.write_vdisk_bytes(vdisk, data, offset)

        op = await rec.record(process, "write", key, digest(data), extra, write, spec.timeout_s)
        _pass_over_on_timeout(ctx, op)
        if spec.verify and op.outcome == "ok":
            await _read_block(ctx, spec, process, vdisk, block)

    return step


async def _read_block(
    ctx: Context, spec: WorkloadSpec, process: int, vdisk: str, block: int
) -> None:
    size = ctx.block_bytes[vdisk]
    extra: dict[str, Any] = {"workload": spec.name, "bytes": size, "offset": block * size}

    async def read() -> str:
        data = await ctx.client.read_vdisk_bytes(vdisk, block * size, size)
        return digest(data)

    op = await ctx.recorder.record(
        process, "read", f"{vdisk}/{block}", None, extra, read, spec.timeout_s
    )
    _pass_over_on_timeout(ctx, op)


def _pass_over_on_timeout(ctx: Context, op: Op) -> None:
    """Like a multipath initiator, a block client that timed out on a node tries another
    one next (the shared client itself waits on any node that still answers probes)."""
    if op.error == TIMED_OUT:
        ctx.client.pass_over_first()


def _reader(ctx: Context, spec: WorkloadSpec, process: int, rng: random.Random) -> Step:
    async def step(i: int) -> None:
        choices = [(v, sorted(b)) for v, b in sorted(ctx.written.items()) if b]
        if not choices:
            await asyncio.sleep(0.05)  # nothing written yet: no read has anything to check
            return
        vdisk, blocks = rng.choice(choices)
        await _read_block(ctx, spec, process, vdisk, rng.choice(blocks))

    return step


def _kv(ctx: Context, spec: WorkloadSpec, process: int, rng: random.Random, index: int) -> Step:
    keys = [f"exp/{ctx.run_id}/{spec.name}/k{i}" for i in range(spec.keys)]
    rec = ctx.recorder
    node = index % len(ctx.node_clients)

    async def step(i: int) -> None:
        nonlocal node
        client = ctx.node_clients[node]
        key = rng.choice(keys)
        extra: dict[str, Any] = {"workload": spec.name, "node": node}
        choice = rng.randrange(3)
        if choice == 0:

            async def read() -> Any:
                return await _kv_value(client, key)

            op = await rec.record(process, "kv-read", key, None, extra, read, spec.timeout_s)
        elif choice == 1:
            value = rng.randrange(KV_VALUES)

            async def write() -> None:
                await client.kv_put(key, value)

            op = await rec.record(process, "kv-write", key, value, extra, write, spec.timeout_s)
        else:
            expected, new = rng.randrange(KV_VALUES), rng.randrange(KV_VALUES)

            async def cas() -> None:
                await _kv_cas(client, key, expected, new)

            op = await rec.record(
                process, "kv-cas", key, [expected, new], extra, cas, spec.timeout_s
            )
        if not _node_answered(op):
            node = (node + 1) % len(ctx.node_clients)  # try another node next time

    return step


def _node_answered(op: Op) -> bool:
    """Whether the node gave ``op`` a definite answer, so a kv client stays with it. A
    refusal (4xx) or a compare-and-set that found another value is one; before, the client
    moved on after a mismatched compare too, walked onto a partitioned node every few
    operations and sat out a timeout there."""
    return op.outcome == "ok" or op.error.startswith(("HTTP 4", CAS_MISMATCH))


async def _kv_value(client: ClusterApi, key: str) -> Any:
    try:
        return (await client.kv_get(key))["value"]
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


async def _kv_cas(client: ClusterApi, key: str, expected: int, new: int) -> None:
    """Set ``key`` to ``new`` if it holds ``expected``: read its version, then write at
    that version. The write is the linearization point; a refused one changed nothing."""
    try:
        item = await client.kv_get(key)
        value, version = item["value"], int(item["version"])
    except ApiError as exc:
        if exc.status != 404:
            raise NoEffect(f"cas read: HTTP {exc.status} {exc.code}") from exc
        value, version = None, 0
    except (Unreachable, BrokenStream, TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise NoEffect(f"cas read: {exc}") from exc
    if value != expected:
        raise NoEffect(f"{CAS_MISMATCH} {value!r}, not {expected!r}")
    await client.kv_put(key, new, expect_version=version)


def disk_digest(source: bytes) -> str:
    """sha256 of the disk a raw source becomes: padded with zeros to a whole sector."""
    return digest(source + bytes(-len(source) % 512))


def _image_file(ctx: Context, name: str, data: bytes) -> str:
    path = os.path.join(ctx.workdir, name + ".raw")
    with open(path, "wb") as f:
        f.write(data)
    return path


def _upload(ctx: Context, spec: WorkloadSpec, process: int, rng: random.Random, index: int) -> Step:
    rec = ctx.recorder

    async def step(i: int) -> None:
        name = f"{spec.name}-{ctx.run_id}-{index}-{i}"
        data = rng.randbytes(spec.image_bytes)
        sha = digest(data)
        path = _image_file(ctx, name, data)
        extra: dict[str, Any] = {"workload": spec.name, "bytes": len(data)}
        extra["disk_sha256"] = disk_digest(data)

        async def upload() -> None:
            try:
                image = await ctx.client.create_image(name)
            except (ApiError, Unreachable) as exc:
                raise NoEffect(f"create: {exc}") from exc
            await ctx.client.upload_image(image["id"], path)

        try:
            op = await rec.record(process, "upload", name, sha, extra, upload, spec.timeout_s)
        finally:
            os.unlink(path)
        if spec.verify and op.outcome == "ok":
            await _download(ctx, spec, process, name, len(data))

    return step


async def _download(ctx: Context, spec: WorkloadSpec, process: int, name: str, size: int) -> None:
    import io

    async def download() -> str:
        buf = io.BytesIO()
        await ctx.client.download_image(name, buf)
        return digest(buf.getvalue())

    extra: dict[str, Any] = {"workload": spec.name, "bytes": size}
    await ctx.recorder.record(process, "download", name, None, extra, download, spec.timeout_s)


def _import(ctx: Context, spec: WorkloadSpec, process: int, rng: random.Random, index: int) -> Step:
    rec = ctx.recorder

    async def step(i: int) -> None:
        name = f"{spec.name}-{ctx.run_id}-{index}-{i}"
        data = rng.randbytes(spec.image_bytes)
        sha = digest(data)
        path = _image_file(ctx, name, data)
        extra: dict[str, Any] = {"workload": spec.name, "bytes": len(data)}
        extra["disk_sha256"] = disk_digest(data)

        async def do_import() -> None:
            file = os.path.basename(path)
            url = f"{ctx.import_base_url}/img/{file}"
            if spec.drop_probability:
                url = f"{ctx.import_base_url}/flaky/{file}?drop={spec.drop_probability}"
            try:
                image = await ctx.client.create_image(name, source_url=url)
            except ApiError as exc:
                if exc.status >= 500:
                    raise
                raise NoEffect(f"create: {exc}") from exc
            while True:
                task = await ctx.client.task(image["task_id"])
                if task["state"] == "SUCCEEDED":
                    break
                if task["state"] == "FAILED":
                    # The image turned ERROR: the import took no effect a client can use.
                    raise NoEffect(f"import failed: {task.get('error')}")
                await asyncio.sleep(TASK_POLL_S)
            final = await ctx.client.image(image["id"])
            extra["sha256_reported"] = final.get("source_sha256")

        try:
            op = await rec.record(process, "import", name, sha, extra, do_import, spec.timeout_s)
        finally:
            os.unlink(path)
        if spec.verify and op.outcome == "ok":
            await _download(ctx, spec, process, name, len(data))

    return step
