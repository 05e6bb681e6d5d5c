"""The real runtime: the asyncio clock, files with fsync, and aiohttp between nodes.

Node-to-node traffic rides on the node's own HTTP port under ``/internal/v1``:
``POST /internal/v1/messages`` carries a batch of one-way messages (Raft), and
``POST /internal/v1/call`` one request whose reply is the response body. Bodies are
the wire codec's msgpack. Every request and every reply is signed with the cluster's
peer key (``fabric.peerauth``); a request that fails a check is refused with 401 before
its body is read, and a body that does not match its signed digest before it is decoded.

One-way messages go through a bounded outbox per peer, drained by one sender task
that packs everything queued into a single request: under load, Raft's many small
messages cost one HTTP round trip per batch instead of one each.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from fabric import ids, limits, peerauth
from fabric.config import ClusterConfig
from fabric.errors import FabricError, from_code
from fabric.keys import ClusterKeys
from fabric.ports import (
    DiskFault,
    DiskFull,
    Handler,
    OneWayHandler,
    PeerUnreachable,
    SourceDropped,
    SourceFailed,
    SourceHead,
)
from fabric.urlguard import Refusal, UrlGuard, host_target
from fabric.wire import checks
from fabric.wire.codec import (
    MAX_BULK_PARTS,
    WireError,
    decode,
    decode_parts,
    encode,
    encode_parts,
)
from fabric.wire.messages import ErrorReply, FaultControl
from fabric.wire.refusals import Refusals
from nodes.faultinject import NetFaults

FROM_HEADER = peerauth.FROM
CLUSTER_HEADER = peerauth.CLUSTER
PARTS_HEADER = peerauth.PARTS
"""Sizes of the header and the raw bulk parts that follow it (``encode_parts``)."""
MSGPACK = "application/msgpack"
_IOV_MAX = 1024  # Linux's limit on buffers in one writev

log = logging.getLogger(__name__)


class RealClock:
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def thread_offload(fn: Any, *args: Any) -> Any:
    """The real runtime's Offload: zstd and xxhash release the GIL, so a thread helps."""
    return await asyncio.to_thread(fn, *args)


class FileDisk:
    """A directory on a real filesystem. Blocking calls run in the default executor."""

    def __init__(self, name: str, root: str, capacity_bytes: int = 0) -> None:
        self.name = name
        self.root = root
        self.capacity_bytes = capacity_bytes
        """0: the file system's free space; else the disk holds at most this many bytes
        of extent groups (``capacity_bytes`` in the config, for experiments)."""
        self._handles: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self.broken = ""
        """Why the directory could not be opened at start (every call then fails)."""
        try:
            os.makedirs(root, mode=0o700, exist_ok=True)
            # File sizes kept up to date by our own writes, so that usage() (every health
            # report) costs one statvfs, not a stat of every extent group file.
            self._sizes = {
                n: os.stat(os.path.join(root, n)).st_size
                for n in os.listdir(root)
                if not n.endswith(".tmp")
            }
        except OSError as exc:
            self.broken = f"disk {name}: {exc.strerror or exc}"

    def _path(self, path: str) -> str:
        # A real check, not an assert (``python -O`` drops those): ``BadId`` for any name
        # that is not one plain file of this directory, before the file system sees it.
        return os.path.join(self.root, ids.file_name(path))

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self.broken:
            raise DiskFault(self.broken)
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            kind = DiskFull if exc.errno in (errno.ENOSPC, errno.EDQUOT) else DiskFault
            raise kind(f"disk {self.name}: {exc.strerror or exc}") from exc

    def _check_room(self, path: str, adding: int) -> None:
        """Past ``capacity_bytes`` an extent-group append fails as a full disk would; the
        Raft log and snapshot are exempt (space reserved for metadata)."""
        if not self.capacity_bytes or not path.endswith(".eg"):
            return
        used = sum(n for p, n in self._sizes.items() if p.endswith(".eg"))
        if used + adding > self.capacity_bytes:
            raise DiskFull(f"disk {self.name}: full (capacity_bytes {self.capacity_bytes})")

    async def read(self, path: str) -> bytes | None:
        def read() -> bytes | None:
            try:
                with open(self._path(path), "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None

        data: bytes | None = await self._run(read)
        return data

    async def write_atomic(self, path: str, data: bytes) -> None:
        def write() -> None:
            self._close(path)
            tmp = self._path(path + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(path))
            self._sync_dir()
            self._sizes[path] = len(data)

        await self._run(write)

    def _sync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _handle(self, path: str) -> int:
        fd = self._handles.get(path)
        if fd is None:
            fd = os.open(self._path(path), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            self._handles[path] = fd
        return fd

    def _close(self, path: str) -> None:
        fd = self._handles.pop(path, None)
        if fd is not None:
            os.close(fd)

    async def append(self, path: str, data: bytes) -> int:
        self._check_room(path, len(data))

        def append() -> int:
            fd = self._handle(path)
            offset = os.fstat(fd).st_size
            view = memoryview(data)
            while view:  # os.write may take less than it was given
                view = view[os.write(fd, view) :]
            self._sizes[path] = offset + len(data)
            return offset

        offset: int = await self._run(append)
        return offset

    async def append_parts(self, path: str, parts: Sequence[bytes]) -> int:
        self._check_room(path, sum(map(len, parts)))

        def append_parts() -> int:
            fd = self._handle(path)
            offset = os.fstat(fd).st_size
            views = [memoryview(p) for p in parts if p]
            while views:  # os.writev may take less than it was given
                done = os.writev(fd, views[:_IOV_MAX])
                while views and done >= len(views[0]):
                    done -= len(views.pop(0))
                if done:
                    views[0] = views[0][done:]
            self._sizes[path] = offset + sum(map(len, parts))
            return offset

        offset: int = await self._run(append_parts)
        return offset

    async def write_at(self, path: str, offset: int, data: bytes) -> None:
        def write_at() -> None:
            # Not the O_APPEND handle: on Linux pwrite on it would append instead.
            fd = os.open(self._path(path), os.O_WRONLY)
            try:
                if offset + len(data) > os.fstat(fd).st_size:
                    raise OSError(f"write past the end of {path}")
                os.pwrite(fd, data, offset)
                os.fdatasync(fd)
            finally:
                os.close(fd)

        await self._run(write_at)

    async def sync(self, path: str) -> None:
        await self._run(lambda: os.fdatasync(self._handle(path)))

    async def pread(self, path: str, offset: int, length: int) -> bytes:
        data: bytes = await self._run(lambda: os.pread(self._handle(path), length, offset))
        return data

    async def size(self, path: str) -> int | None:
        def size() -> int | None:
            try:
                return os.stat(self._path(path)).st_size
            except FileNotFoundError:
                return None

        result: int | None = await self._run(size)
        return result

    async def delete(self, path: str) -> None:
        def delete() -> None:
            self._close(path)
            self._sizes.pop(path, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(path))

        await self._run(delete)

    async def listdir(self) -> list[str]:
        names: list[str] = await self._run(lambda: sorted(os.listdir(self.root)))
        return [n for n in names if not n.endswith(".tmp")]

    async def usage(self) -> tuple[int, int]:
        def usage() -> tuple[int, int]:
            st = os.statvfs(self.root)
            used = sum(self._sizes.values())
            room = used + st.f_bavail * st.f_frsize
            return used, min(room, self.capacity_bytes) if self.capacity_bytes else room

        result: tuple[int, int] = await self._run(usage)
        return result

    def close(self) -> None:
        for path in list(self._handles):
            self._close(path)


class HttpTransport:
    def __init__(
        self,
        node_id: str,
        config: ClusterConfig,
        keys: ClusterKeys,
        ssl_context: ssl.SSLContext | None = None,
        wall: Callable[[], float] = time.time,
        net: NetFaults | None = None,
    ) -> None:
        self.node_id = node_id
        self.wall = wall
        """The clock peer requests are signed and checked on: the node's (a skewed one
        under a clock fault, which peers then refuse past ``PEER_CLOCK_SKEW_S``)."""
        self.net = net
        """Injected network faults on what this node sends (None: never any)."""
        if net is not None:
            net.on_reset = self._reset
        self._on_control: Callable[[FaultControl], Awaitable[Any]] | None = None
        self.ssl_context = ssl_context
        """Trusting the cluster's CA when its nodes serve HTTPS (None: plain HTTP)."""
        self.cluster_id = config.id
        self.urls = {n.id: n.url for n in config.nodes}
        self.auth = peerauth.PeerAuth(
            keys.peer_key,
            node_id,
            config.id,
            is_peer=lambda sender: sender in self.urls,
            skew_s=limits.PEER_CLOCK_SKEW_S,
            nonces_kept=limits.PEER_NONCES_KEPT,
        )
        self.refused: collections.Counter[str] = collections.Counter()
        """Requests refused by authentication, by check (exported in /metrics)."""
        self._last_refusal_log = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._outbox: dict[str, collections.deque[Any]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._on_call: Handler | None = None
        self._on_message: OneWayHandler | None = None
        self.refusals = Refusals()
        """Messages from peers refused as malformed or invalid (``/metrics``)."""

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit_per_host=32, ssl=self.ssl_context if self.ssl_context else True
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        for task in self._senders.values():
            task.cancel()
        if self._session is not None:
            await self._session.close()

    def serve(self, on_call: Handler, on_message: OneWayHandler) -> None:
        self._on_call = on_call
        self._on_message = on_message

    def serve_control(self, on_control: Callable[[FaultControl], Awaitable[Any]]) -> None:
        self._on_control = on_control

    async def _reset(self) -> None:
        """net-reset: every pooled connection dies (the next calls dial again)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def set_peers(self, urls: dict[str, str]) -> None:
        """Nodes that joined become reachable (and may call us). One that left stays
        known: Raft may still be telling it that it is out."""
        self.urls = {**self.urls, **urls}

    # --- one-way ----------------------------------------------------------------------------
    def send(self, peer: str, message: Any) -> None:
        if peer not in self.urls:
            return
        if self.net is not None and self.net.rules:
            copies, wait_s = self.net.one_way(peer)
            for _ in range(copies):
                if wait_s:
                    asyncio.get_running_loop().call_later(wait_s, self._enqueue, peer, message)
                else:
                    self._enqueue(peer, message)
            return
        self._enqueue(peer, message)

    def _enqueue(self, peer: str, message: Any) -> None:
        box = self._outbox.setdefault(peer, collections.deque(maxlen=limits.PEER_OUTBOX_MESSAGES))
        box.append(message)
        if peer not in self._senders:
            self._wakeups[peer] = asyncio.Event()
            self._senders[peer] = asyncio.get_running_loop().create_task(self._drain(peer))
        self._wakeups[peer].set()

    async def _drain(self, peer: str) -> None:
        box = self._outbox[peer]
        wake = self._wakeups[peer]
        url = self.urls[peer] + "/internal/v1/messages"
        while True:
            await wake.wait()
            wake.clear()
            while box:
                batch = [box.popleft() for _ in range(min(len(box), limits.MAX_RPC_BATCH_MESSAGES))]
                body = encode(batch)
                if self.net is not None and self.net.rules:
                    await self._throttle(peer, len(body))
                try:
                    async with self.session().post(
                        url,
                        data=body,
                        headers=self._headers("/internal/v1/messages", peerauth.body_digest(body)),
                        timeout=aiohttp.ClientTimeout(total=2.0),
                    ) as resp:
                        await resp.read()
                except (aiohttp.ClientError, TimeoutError, OSError):
                    # The peer is down: Raft resends what matters. Drop what is queued so
                    # a dead peer does not pin memory, and back off before trying again.
                    box.clear()
                    await asyncio.sleep(0.05)

    async def _throttle(self, peer: str, size: int) -> None:
        assert self.net is not None
        for f in self.net.toward(peer):
            if f.kind == "net-bandwidth":
                loop = asyncio.get_running_loop()
                await asyncio.sleep(self.net.bandwidth_wait_s(f, peer, size, loop.time()))

    def _headers(
        self, path: str, digest: str, parts: str = "", wall: float | None = None
    ) -> dict[str, str]:
        headers = self.auth.sign(
            "POST",
            path,
            self.wall() if wall is None else wall,
            os.urandom(peerauth.NONCE_BYTES),
            digest,
            parts,
        )
        headers["Content-Type"] = MSGPACK
        if parts:
            headers[PARTS_HEADER] = parts
        return headers

    # --- request/response -------------------------------------------------------------------
    async def call(self, peer: str, message: Any, timeout_s: float) -> Any:
        url = self.urls.get(peer)
        if url is None:
            raise PeerUnreachable(peer, "not in the cluster config")
        header, parts = encode_parts(message)
        layout = ",".join(map(str, (len(header), *map(len, parts)))) if parts else ""
        headers = self._headers("/internal/v1/call", await _digest(header, *parts), layout)
        if self.net is not None and self.net.rules:
            size = len(header) + sum(map(len, parts))
            await self.net.before_call(peer, size, asyncio.get_running_loop().time())
        data: bytes | AsyncIterator[bytes] = header
        if parts:
            # Bulk bytes go raw after the header, never joined or packed into one buffer.
            headers["Content-Length"] = str(len(header) + sum(map(len, parts)))
            data = _body_of(header, parts)
        try:
            async with self.session().post(
                url + "/internal/v1/call",
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                body = await resp.read()
                status, signature = resp.status, resp.headers.get(peerauth.AUTH, "")
        except (aiohttp.ClientError, OSError) as exc:
            raise PeerUnreachable(peer, str(exc) or type(exc).__name__) from None
        except TimeoutError:
            raise PeerUnreachable(peer, f"no answer within {timeout_s:g} s") from None
        if status != 200:
            text = body[:200].decode(errors="replace")
            raise PeerUnreachable(peer, f"refused the call: {status} {text}")
        try:
            self.auth.check_reply(headers[peerauth.NONCE], peer, await _digest(body), signature)
        except peerauth.AuthError as exc:
            raise PeerUnreachable(peer, str(exc)) from None
        try:
            reply = decode(body)
        except WireError as exc:
            raise PeerUnreachable(peer, f"bad reply: {exc}") from None
        if isinstance(reply, ErrorReply):
            raise from_code(reply.code, reply.message)
        return reply

    async def control(self, peer: str, message: FaultControl, timeout_s: float) -> Any:
        """A fault control call: its own route, signed on the true clock, and none of the
        injected faults in the way (a partitioned or skewed node still hears it)."""
        url = self.urls.get(peer)
        if url is None:
            raise PeerUnreachable(peer, "not in the cluster config")
        body = encode(message)
        path = "/internal/v1/control"
        headers = self._headers(path, peerauth.body_digest(body), wall=time.time())
        try:
            # Its own short-lived session: a net-reset must not cut the control channel.
            async with (
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(
                        ssl=self.ssl_context if self.ssl_context else True
                    )
                ) as session,
                session.post(
                    url + path,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout_s),
                ) as resp,
            ):
                answer = await resp.read()
                status, signature = resp.status, resp.headers.get(peerauth.AUTH, "")
        except (aiohttp.ClientError, OSError) as exc:
            raise PeerUnreachable(peer, str(exc) or type(exc).__name__) from None
        except TimeoutError:
            raise PeerUnreachable(peer, f"no answer within {timeout_s:g} s") from None
        if status != 200:
            raise PeerUnreachable(
                peer, f"refused: {status} {answer[:200].decode(errors='replace')}"
            )
        try:
            self.auth.check_reply(
                headers[peerauth.NONCE], peer, peerauth.body_digest(answer), signature
            )
            reply = decode(answer)
        except (peerauth.AuthError, WireError) as exc:
            raise PeerUnreachable(peer, str(exc)) from None
        if isinstance(reply, ErrorReply):
            raise from_code(reply.code, reply.message)
        return reply

    # --- the serving side, mounted on the node's aiohttp app --------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/internal/v1/messages", self._serve_messages),
            web.post("/internal/v1/call", self._serve_call),
            web.post("/internal/v1/control", self._serve_control),
        ]

    def _refuse(self, request: web.Request, exc: peerauth.AuthError) -> web.HTTPUnauthorized:
        reason = str(exc)
        self.refused[reason.split(" ", 1)[0]] += 1
        now = time.monotonic()
        if now - self._last_refusal_log > limits.PEER_REFUSAL_LOG_EVERY_S:
            # One line per interval: a flood of forged requests must not flood the log.
            self._last_refusal_log = now
            log.warning("refused a request to %s from %s: %s", request.path, request.remote, reason)
        return web.HTTPUnauthorized(text=reason)

    async def _body(self, request: web.Request) -> tuple[peerauth.Signed, Any]:
        # Control is checked on the true clock: a skewed node must still hear "clear".
        now = time.time() if request.path == "/internal/v1/control" else self.wall()
        try:
            signed = self.auth.check(request.method, request.path, request.headers, now)
        except peerauth.AuthError as exc:
            raise self._refuse(request, exc) from None
        if (request.content_length or 0) > limits.MAX_MESSAGE_BYTES:
            raise web.HTTPRequestEntityTooLarge(
                max_size=limits.MAX_MESSAGE_BYTES, actual_size=request.content_length or 0
            )
        try:
            layout = request.headers.get(PARTS_HEADER)
            if layout is None:
                body = await request.read()  # bounded by the app's client_max_size
                self.auth.check_body(signed, await _digest(body))
                return signed, decode(body)
            sizes = _part_sizes(layout, request.content_length)
            read = request.content.readexactly
            header = await read(sizes[0])
            parts = [await read(n) for n in sizes[1:]]
            self.auth.check_body(signed, await _digest(header, *parts))
            return signed, decode_parts(header, tuple(parts))
        except peerauth.AuthError as exc:
            raise self._refuse(request, exc) from None
        except WireError as exc:
            self.refusals.count(exc)
            raise web.HTTPBadRequest(text=str(exc)) from None
        except asyncio.IncompleteReadError:
            raise web.HTTPBadRequest(text="body shorter than its parts") from None

    async def _serve_messages(self, request: web.Request) -> web.Response:
        signed, body = await self._body(request)
        frm = signed.sender
        if self._on_message is None:
            raise web.HTTPServiceUnavailable(text="node is starting")
        try:
            batch = checks.one_way_batch(body, frm, self.node_id)
        except WireError as exc:  # one bad message refuses the whole batch
            self.refusals.count(exc)
            raise web.HTTPBadRequest(text=str(exc)) from None
        for message in batch:
            self._on_message(frm, message)
        return web.Response(status=204)

    async def _serve_call(self, request: web.Request) -> web.Response:
        signed, message = await self._body(request)
        if self._on_call is None:
            raise web.HTTPServiceUnavailable(text="node is starting")
        try:
            reply = await self._on_call(signed.sender, message)
        except FabricError as exc:
            reply = ErrorReply(exc.code, exc.message)
        body = encode(reply)
        mac = self.auth.sign_reply(signed.nonce, await _digest(body))
        return web.Response(body=body, content_type=MSGPACK, headers={peerauth.AUTH: mac})

    async def _serve_control(self, request: web.Request) -> web.Response:
        signed, message = await self._body(request)
        if not isinstance(message, FaultControl):
            self.refusals.count(
                WireError(f"{type(message).__name__} is not fault control", "envelope")
            )
            raise web.HTTPBadRequest(text="only fault control travels on this route")
        if self._on_control is None:
            reply: Any = ErrorReply("unavailable", f"node {self.node_id} takes no faults")
        else:
            try:
                reply = await self._on_control(message)
            except FabricError as exc:
                reply = ErrorReply(exc.code, exc.message)
        body = encode(reply)
        mac = self.auth.sign_reply(signed.nonce, peerauth.body_digest(body))
        return web.Response(body=body, content_type=MSGPACK, headers={peerauth.AUTH: mac})


async def _digest(*chunks: bytes) -> str:
    """``peerauth.body_digest``, off the event loop for a body big enough to stall it
    (BLAKE3 releases the GIL: a megabyte extent batch costs the loop nothing)."""
    if sum(map(len, chunks)) < limits.PEER_DIGEST_INLINE_BYTES:
        return peerauth.body_digest(*chunks)
    digest: str = await asyncio.to_thread(peerauth.body_digest, *chunks)
    return digest


async def _body_of(header: bytes, parts: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    yield header
    for part in parts:
        yield part


def _part_sizes(layout: str, content_length: int | None) -> list[int]:
    """The sizes in an ``X-Fabric-Parts`` header, held to the body's announced length."""
    try:
        sizes = [int(n) for n in layout.split(",")]
    except ValueError:
        raise WireError(f"bad {PARTS_HEADER} {layout[:80]!r}") from None
    if not 1 < len(sizes) <= MAX_BULK_PARTS + 1 or min(sizes) < 0:
        raise WireError(f"bad {PARTS_HEADER}: {len(sizes)} sizes")
    if sum(sizes) != content_length:
        raise WireError(f"{PARTS_HEADER} adds up to {sum(sizes)}, body is {content_length}")
    return sizes


class GuardedResolver(AbstractResolver):
    """Resolves through ``inner`` and gives aiohttp only the addresses the guard allows,
    so the addresses checked are the ones connected to (no rebinding in between)."""

    def __init__(self, inner: AbstractResolver, guard: UrlGuard) -> None:
        self.inner = inner
        self.guard = guard
        self._knows_nodes = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        await self._learn_node_addresses()
        found = await self.inner.resolve(host, port, family)
        admitted = self.guard.admit(host_target(host, port), [r["host"] for r in found])
        if isinstance(admitted, Refusal):
            raise SourceFailed(admitted.message)
        return [r for r in found if r["host"] in admitted]

    async def _learn_node_addresses(self) -> None:
        """Nodes named by host name are recognised by their addresses too."""
        if self._knows_nodes:
            return
        resolved: dict[str, list[str]] = {}
        for name in sorted(self.guard.node_names()):
            try:
                found = await self.inner.resolve(name, 0, socket.AF_UNSPEC)
            except OSError:
                continue  # a node name that does not resolve cannot be connected to either
            resolved[name] = [r["host"] for r in found]
        self.guard = self.guard.knowing(resolved)
        self._knows_nodes = True

    async def close(self) -> None:
        pass  # the inner resolver is the fetcher's, shared by its requests


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class HttpFetcher:
    """URL import's reads over real sockets (aiohttp), mapped onto the fetch port's errors.

    Each request gets its own connector whose resolver is guarded, and follows redirects
    itself, checking every hop: the guard sees every address before a connection is made
    to it. ``resolver`` is injectable so tests decide what a name resolves to.
    """

    def __init__(self, resolver: AbstractResolver | None = None) -> None:
        self._resolver = resolver

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()

    def _session(self, guard: UrlGuard) -> aiohttp.ClientSession:
        if self._resolver is None:
            self._resolver = aiohttp.DefaultResolver()  # needs the running loop
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=limits.IMPORT_CONNECT_TIMEOUT_S,
            sock_read=limits.IMPORT_STALL_S,
        )
        # No DNS cache and no pooled connection outlive this request's checks; no proxy
        # from the environment (it would connect for us, unchecked).
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._resolver, guard), use_dns_cache=False
        )
        return aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)

    @contextlib.asynccontextmanager
    async def get(
        self, url: str, offset: int, guard: UrlGuard
    ) -> AsyncIterator[tuple[SourceHead, AsyncIterator[bytes]]]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            async with self._session(guard) as session:
                resp = await _follow(session, url, headers, guard)
                async with resp:
                    head = SourceHead(resp.status, resp.reason or "", resp.content_length)
                    yield head, _chunks(resp)
        except aiohttp.InvalidURL:
            raise SourceFailed("invalid URL") from None
        except aiohttp.ClientConnectorError as exc:
            raise SourceFailed(f"cannot connect: {exc}") from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise SourceDropped(str(exc)) from None
        except aiohttp.ClientOSError as exc:
            raise SourceDropped(str(exc)) from None
        except TimeoutError:
            raise SourceDropped(f"stalled: no bytes for {limits.IMPORT_STALL_S:g} s") from None


async def _follow(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], guard: UrlGuard
) -> aiohttp.ClientResponse:
    """The response at the end of ``url``'s redirects, each hop checked before it is
    requested. Credentials in the URL go only to hops on the URL's own origin."""
    try:
        first = URL(url)
    except ValueError:
        raise SourceFailed("invalid URL") from None
    auth = aiohttp.BasicAuth.from_url(first)
    hop = first.with_user(None)
    for _ in range(limits.IMPORT_MAX_REDIRECTS + 1):
        _check_hop(guard, hop)
        sent = dict(headers)
        if auth is not None and hop.origin() == first.with_user(None).origin():
            sent["Authorization"] = auth.encode()
        resp = await session.get(hop, headers=sent, allow_redirects=False)
        location = resp.headers.get("Location")
        if resp.status not in _REDIRECTS or location is None:
            return resp
        resp.release()
        try:
            hop = hop.join(URL(location))
        except ValueError:
            raise SourceFailed("a redirect to an invalid URL") from None
    raise SourceFailed(f"more than {limits.IMPORT_MAX_REDIRECTS} redirects")


def _check_hop(guard: UrlGuard, hop: URL) -> None:
    """The guard's check of a hop's URL, and of its address when the host is written as
    one: aiohttp connects to those without asking the resolver."""
    target = guard.check_url(str(hop))
    if isinstance(target, Refusal):
        raise SourceFailed(target.message)
    host = hop.raw_host or ""
    # aiohttp's own test for "this host is an address" (aiohttp.helpers.is_ip_address).
    if ":" in host or host.replace(".", "").isdigit():
        refusal = guard.check_address(host_target(host, target.port), host)
        if refusal is not None:
            raise SourceFailed(refusal.message)


async def _chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.content.iter_chunked(1 << 20):
            yield chunk
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        raise SourceDropped(str(exc)) from None
    except aiohttp.ClientOSError as exc:
        raise SourceDropped(str(exc)) from None
    except TimeoutError:
        raise SourceDropped(f"stalled: no bytes for {limits.IMPORT_STALL_S:g} s") from None
