"""The ports through which node code reaches the outside world.

Core logic never imports asyncio, sockets, files or the wall clock; coordination code
(the services in ``nodes/``) gets these objects from a runtime. Two runtimes implement
them: ``nodes.runtime`` (real processes, sockets, files with fsync) and ``fabric.sim``
(one process, virtual time, in-memory network and disks, one seeded RNG).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from fabric.buggify import OFF as buggify_off
from fabric.buggify import Buggify
from fabric.keys import ClusterKeys
from fabric.urlguard import UrlGuard
from fabric.wire.refusals import Refusals

NODE_ID: ContextVar[str | None] = ContextVar("fabric_node_id", default=None)
"""The node whose task is running (``Node.spawn`` sets it in every task it starts, and
tasks inherit it): what lets the simulator pause one node of many on one event loop."""


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds (virtual under simulation)."""

    def wall(self) -> float:
        """Seconds since the epoch, for timestamps shown to users."""

    async def sleep(self, seconds: float) -> None: ...


class PeerUnreachable(Exception):
    """A peer did not answer: dead, partitioned, or too slow (an operating fault)."""

    def __init__(self, peer: str, why: str) -> None:
        super().__init__(f"node {peer} unreachable: {why}")
        self.peer = peer


class RemoteError(Exception):
    """A peer answered a call with an error; ``code`` says which kind."""

    def __init__(self, peer: str, code: str, message: str) -> None:
        super().__init__(f"node {peer}: {code}: {message}")
        self.peer = peer
        self.code = code
        self.message = message


Handler = Callable[[str, Any], Awaitable[Any]]
"""Serves one incoming call: ``(from_node, message) -> reply``."""
OneWayHandler = Callable[[str, Any], None]
"""Takes one incoming one-way message: ``(from_node, message)``."""


class Transport(Protocol):
    """Messages between nodes. Messages are the dataclasses known to ``fabric.wire``."""

    refusals: Refusals
    """What peers sent that was refused before any handler saw it, by reason."""

    def send(self, peer: str, message: Any) -> None:
        """Fire and forget (Raft): may be lost, delayed or reordered; never blocks."""

    async def call(self, peer: str, message: Any, timeout_s: float) -> Any:
        """Request/response; raises PeerUnreachable or RemoteError."""

    def serve(self, on_call: Handler, on_message: OneWayHandler) -> None:
        """Install the handlers for incoming traffic."""

    def set_peers(self, urls: dict[str, str]) -> None:
        """The cluster's nodes changed: node id -> base URL of every member (one that
        joined becomes reachable; one that left may stay so)."""


class DiskFault(Exception):
    """A disk operation failed: device gone, full, or read back corrupt (an operating fault)."""


class DiskFull(DiskFault):
    """No space left on the disk (or past its configured ``capacity_bytes``): the disk
    works, it only takes nothing more until space is freed."""


class Disk(Protocol):
    """One disk of a node: a flat namespace of files. Appends are durable after ``sync``."""

    name: str

    async def read(self, path: str) -> bytes | None:
        """The whole file, or None if it does not exist."""

    async def write_atomic(self, path: str, data: bytes) -> None:
        """Replace the file with ``data``, durably and all-or-nothing."""

    async def append(self, path: str, data: bytes) -> int:
        """Append and return the offset it landed at (durable after ``sync``)."""

    async def append_parts(self, path: str, parts: Sequence[bytes]) -> int:
        """``append`` of ``parts`` one after another, without joining them first."""

    async def write_at(self, path: str, offset: int, data: bytes) -> None:
        """Overwrite bytes inside an existing file, durably (used to repair a bad copy)."""

    async def sync(self, path: str) -> None: ...

    async def pread(self, path: str, offset: int, length: int) -> bytes: ...

    async def size(self, path: str) -> int | None: ...

    async def delete(self, path: str) -> None: ...

    async def listdir(self) -> list[str]: ...

    async def usage(self) -> tuple[int, int]:
        """(used_bytes, capacity_bytes)."""


class Offload(Protocol):
    """Runs CPU-heavy pure work (hashing, compression) off the event loop when it can.

    The real runtime uses a worker thread; the simulator runs it inline, because a thread
    would let the wall clock decide the order of events.
    """

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any: ...


class SourceFailed(Exception):
    """A URL source failed for good: an HTTP error, a bad URL, too many redirects."""


class SourceDropped(Exception):
    """A URL source's connection broke or stalled midway: resume it with a Range request."""


@dataclass(frozen=True, slots=True)
class SourceHead:
    status: int
    reason: str
    content_length: int | None
    """Bytes the response announced (from the requested offset), if it said."""


class Fetcher(Protocol):
    """Reads http(s) URLs for URL import (real sockets, or simulated sources)."""

    def get(
        self, url: str, offset: int, guard: UrlGuard
    ) -> AbstractAsyncContextManager[tuple[SourceHead, AsyncIterator[bytes]]]:
        """The response to a GET from byte ``offset`` (a Range request when > 0).

        ``guard`` decides every connection: the URL and every address its host resolves
        to, checked where the connection is made, and again at every redirect hop; a
        refusal raises ``SourceFailed`` with the guard's message. Raises ``SourceFailed``
        or ``SourceDropped``; the chunk iterator raises ``SourceDropped`` when the
        connection breaks or sends nothing for too long.
        """


class Spawner(Protocol):
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> Any:
        """Run ``coro`` as a task owned by the node; cancelled when the node stops."""


async def run_inline(fn: Callable[..., Any], *args: Any) -> Any:
    """The simulator's ``Offload``: pure work runs where it is called, in event order."""
    return fn(*args)


@dataclass(frozen=True)
class Runtime:
    """Everything a node gets from its surroundings, handed over once at construction.

    ``nodes.runtime`` builds the real one (asyncio clock, aiohttp, files with fsync, a
    worker thread, an HTTP client); ``nodes.simcluster`` the simulated one (virtual
    clock, ``SimNetwork``, ``SimDisk``s, inline work, ``SimHttp``), from one seed.
    """

    clock: Clock
    rng: random.Random
    transport: Transport
    disks: list[Disk]
    offload: Offload = run_inline
    fetcher: Fetcher | None = None
    """URL import's HTTP client (None: this runtime refuses URL imports)."""
    spill_factory: Callable[[], Any] | None = None
    """The image readers' spill area (None: in memory, bounded by the readers' limits)."""
    keys: ClusterKeys | None = None
    """Keys derived from the cluster secret (None: a runtime for one part's benchmark,
    with no secret; content ids are then unkeyed)."""
    buggify: Buggify = buggify_off
    """The node's BUGGIFY points (``fabric.buggify``): only a simulated runtime turns them
    on."""
