"""Guards of a node's HTTP server: connections per client, request heads and bodies that stall.

Theory of operation
-------------------
aiohttp parses the requests; these guards bound what one client can hold meanwhile.

* **Request heads** are bounded by aiohttp itself: its keep-alive timer
  (``keepalive_timeout``, set to ``[limits] header_timeout_s`` in ``nodes/main.py``) is
  armed when a connection opens and again after each answer, and closes the connection
  only while it is waiting for a request head. Bytes trickling in do not re-arm it, so a
  client sending its headers a byte at a time (slowloris) is cut off as surely as one
  sending nothing. (aiohttp arms it at the opening only since 3.14.5; the version is
  pinned, and ``tests/security/test_limits.py`` holds it.)
* **Bodies**: ``guard_middleware`` watches every request whose body is still arriving.
  When no byte came for ``body_idle_s`` while the connection was being read, the body
  stream gets ``BodyStalled``: whoever reads it gets that error (an image upload fails,
  its image goes ERROR and its conversion slot is free) and the request is answered 408.
  A connection that is *not* being read is the node's own back-pressure (an ingest
  behind its writes), never counted against the client.
* **Connections**: ``ConnectionGuard`` wraps aiohttp's protocol factory and counts the
  open client connections of each peer address. An address that is no node of the
  cluster is refused at once past ``connections_per_client`` (a 503
  ``too_many_connections`` written before anything is read, then closed). A node's own
  address (on one host every local client shares 127.0.0.1 with the nodes) has its
  connections sorted by their requests: one that only ever carried ``/internal/``
  requests is a node link, counted apart and never refused, so no client can starve
  the cluster's own traffic; one that carries any other request counts against the
  address's client budget from then on, and one past it is answered 503 and closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from aiohttp.streams import StreamReader

from fabric import limits
from fabric.config import ServeLimits
from fabric.errors import BodyStalled, TooManyConnections

log = logging.getLogger(__name__)

INTERNAL_PREFIX = "/internal/"
CLIENT, NODE_LINK, UNSORTED = "client", "node", "unsorted"


def address_of(transport: asyncio.BaseTransport) -> str:
    """The peer's IP address as text (an IPv4-mapped IPv6 address as its IPv4)."""
    peer = transport.get_extra_info("peername")
    if not peer:
        return ""  # a Unix socket: one local client
    try:
        ip = ipaddress.ip_address(peer[0])
    except ValueError:
        return str(peer[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class NodeAddresses:
    """The IP addresses the cluster's nodes listen on, resolved once per host name."""

    def __init__(self, hosts: Callable[[], Iterable[str]]) -> None:
        self._hosts = hosts
        self._resolved: dict[str, frozenset[str]] = {}

    def __call__(self) -> frozenset[str]:
        out: set[str] = set()
        for host in self._hosts():
            found = self._resolved.get(host)
            if found is None:
                found = self._resolved[host] = _resolve(host)
            out |= found
        return frozenset(out)


def _resolve(host: str) -> frozenset[str]:
    try:
        return frozenset({str(ipaddress.ip_address(host))})
    except ValueError:
        pass
    try:
        # Once per host name of the config (or of a node added later): the cache keeps
        # later connections off the resolver.
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        log.warning("cannot resolve node host %r (%s): its links count as a client's", host, exc)
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)


@dataclass
class _Conn:
    address: str
    kind: str


class ConnectionGuard:
    """Counts open connections per client address; wraps aiohttp's protocol factory."""

    def __init__(self, node_addresses: Callable[[], frozenset[str]], serve: ServeLimits) -> None:
        self._node_addresses = node_addresses
        self.per_client = serve.connections_per_client
        self.body_idle_s = serve.body_idle_s
        self._clients: Counter[str] = Counter()
        self._conns: dict[asyncio.BaseTransport, _Conn] = {}
        self.refused = 0
        """Connections answered 503 ``too_many_connections`` (a counter for tests)."""

    def factory(self, server: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory to listen with: aiohttp's ``server``, behind this guard."""
        return lambda: _Guarded(self, server)

    def clients(self, address: str) -> int:
        return self._clients[address]

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """A connection opened: False if it must be refused at once."""
        address = address_of(transport)
        if address in self._node_addresses():
            self._conns[transport] = _Conn(address, UNSORTED)
            return True
        if self._clients[address] >= self.per_client:
            self.refused += 1
            return False
        self._clients[address] += 1
        self._conns[transport] = _Conn(address, CLIENT)
        return True

    def sort(self, transport: asyncio.BaseTransport, internal: bool) -> bool:
        """A request arrived on ``transport``: on a connection from a node's address it says
        what the connection is. False: a client connection over budget."""
        conn = self._conns.get(transport)
        if conn is None or conn.kind == CLIENT:
            return True
        if internal:
            conn.kind = NODE_LINK
            return True
        # A client request on a connection that passed for a node link (or on a new
        # one): from now on it is a client's, counted (nodes send only /internal/).
        if self._clients[conn.address] >= self.per_client:
            self.refused += 1
            return False
        conn.kind = CLIENT
        self._clients[conn.address] += 1
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        conn = self._conns.pop(transport, None)
        if conn is not None and conn.kind == CLIENT:
            self._clients[conn.address] -= 1
            if self._clients[conn.address] <= 0:
                del self._clients[conn.address]

    def refusal(self, address: str) -> TooManyConnections:
        return TooManyConnections(
            f"{address or 'this client'} already holds {self.per_client} connections to "
            "this node (the limit per client address); close some and retry"
        )


def _raw_refusal(error: TooManyConnections) -> bytes:
    body = json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
    head = (
        f"HTTP/1.1 {error.status} Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's count.

    Delegates every event; a refused connection never reaches aiohttp at all.
    """

    def __init__(self, guard: ConnectionGuard, server: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._server = server
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if not self._guard.admit(transport):
            transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
            transport.write(_raw_refusal(self._guard.refusal(address_of(transport))))
            transport.close()
            return
        self._inner = self._server()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._guard.release(self._transport)
        if self._inner is not None:
            self._inner.connection_lost(exc)


GUARD = web.AppKey("connection_guard", ConnectionGuard)


class BodyWatch:
    """Fails a request body from which nothing arrived for ``idle_s`` (see the module)."""

    def __init__(
        self, content: StreamReader, transport: asyncio.BaseTransport | None, idle_s: float
    ) -> None:
        self._content = content
        self._transport = cast(asyncio.Transport | None, transport)
        self._idle_s = idle_s
        self._step_s = idle_s / limits.HTTP_BODY_CHECKS_PER_IDLE
        self._loop = asyncio.get_running_loop()
        self._seen = content.total_bytes
        self._quiet_since = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(self._step_s, self._check)

    def _check(self) -> None:
        self._handle = None
        content = self._content
        if content.is_eof() or content.exception() is not None:
            return
        now = self._loop.time()
        reading = self._transport is not None and self._transport.is_reading()
        if content.total_bytes != self._seen or not reading:
            self._seen = content.total_bytes
            self._quiet_since = now
        elif now - self._quiet_since >= self._idle_s:
            content.set_exception(
                BodyStalled(
                    f"no byte of the request body arrived for {self._idle_s:g} s "
                    f"(after {content.total_bytes} bytes); the request is abandoned"
                )
            )
            return
        self._handle = self._loop.call_later(self._step_s, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _too_many(error: TooManyConnections) -> web.Response:
    response = web.json_response(
        {"error": {"code": error.code, "message": error.message}}, status=error.status
    )
    response.force_close()  # the connection goes, not just this request
    return response


@web.middleware
async def guard_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    guard = request.app[GUARD]
    transport = request.transport
    if transport is not None and not guard.sort(
        transport, request.path.startswith(INTERNAL_PREFIX)
    ):
        return _too_many(guard.refusal(address_of(transport)))
    watch = None
    if not request.content.is_eof():
        watch = BodyWatch(request.content, transport, guard.body_idle_s)
    try:
        return await handler(request)
    finally:
        if watch is not None:
            watch.stop()
