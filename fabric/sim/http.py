"""Simulated URL sources for URL import: bytes served on virtual time, drops scripted.

``SimHttp`` implements the ``Fetcher`` port. A test registers a source with the bytes
it serves and, per request, how many bytes to send before the connection drops; the
import under test then resumes with Range requests exactly as it would against a real
server, on the simulator's clock and with nothing random outside the seed.

Connections go through the import guard as real ones do: a host name resolves through
``names`` (the simulation's DNS), every address is checked before the "connection", and
a source may redirect (``location``), each hop checked again.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from fabric import limits
from fabric.ports import Clock, SourceDropped, SourceFailed, SourceHead
from fabric.urlguard import Refusal, UrlGuard

CHUNK_BYTES = 256 * 1024
CHUNK_DELAY_S = 0.001
"""Virtual time per chunk: a source that streams, not one that arrives at once."""


@dataclass
class SimSource:
    data: bytes
    drops: list[int | None] = field(default_factory=list)
    """For each successive request: bytes sent before the connection drops (None: all)."""
    ranges: bool = True
    """Whether the server honours Range (206); without, a resume gets a 200."""
    status: int = 200
    location: str | None = None
    """With a 3xx ``status``: where the source redirects to."""
    drop_for: Callable[[int, int], int | None] | None = None
    """Decides each request's drop when ``drops`` has none left: given the offset asked
    for and the body length, the bytes sent before the connection drops (None: all)."""


class SimHttp:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sources: dict[str, SimSource] = {}
        """By URL without credentials."""
        self.names: dict[str, list[str]] = {}
        """What a host name resolves to."""
        self.requests: list[tuple[str, int]] = []
        """(url, offset) of every GET that reached a source (every hop), in order; the URL
        as the fetcher used it, credentials and all."""

    def serve(self, url: str, source: SimSource) -> None:
        self.sources[url] = source

    def resolve(self, name: str, *addresses: str) -> None:
        self.names[name] = list(addresses)

    @contextlib.asynccontextmanager
    async def get(
        self, url: str, offset: int, guard: UrlGuard
    ) -> AsyncIterator[tuple[SourceHead, AsyncIterator[bytes]]]:
        guard = guard.knowing({n: self.names.get(n, []) for n in guard.node_names()})
        for _ in range(limits.IMPORT_MAX_REDIRECTS + 1):
            source = self._connect(url, guard)
            self.requests.append((url, offset))
            if source.location is None:
                break
            url = urljoin(url, source.location)
        else:
            raise SourceFailed(f"more than {limits.IMPORT_MAX_REDIRECTS} redirects")
        if source.status != 200:
            yield SourceHead(source.status, "simulated error", 0), _empty()
            return
        start = offset if source.ranges else 0
        body = source.data[start:]
        drop = None
        if source.drops:
            drop = source.drops.pop(0)
        elif source.drop_for is not None:
            drop = source.drop_for(start, len(body))
        status = 206 if offset and source.ranges else 200
        yield SourceHead(status, "OK", len(body)), self._chunks(body, drop)

    def _connect(self, url: str, guard: UrlGuard) -> SimSource:
        """The source at ``url``, if the guard lets a connection reach its host."""
        target = guard.check_url(url)
        if isinstance(target, Refusal):
            raise SourceFailed(target.message)
        found = [str(target.literal)] if target.literal else self.names.get(target.host, [])
        if not found:
            raise SourceFailed(f"cannot resolve {target.host}")
        admitted = guard.admit(target, found)
        if isinstance(admitted, Refusal):
            raise SourceFailed(admitted.message)
        parts = urlsplit(url)
        source = self.sources.get(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())
        if source is None:
            raise SourceFailed(f"cannot connect: no simulated source at {target.host}")
        return source

    async def _chunks(self, body: bytes, drop: int | None) -> AsyncIterator[bytes]:
        sent = 0
        for start in range(0, len(body), CHUNK_BYTES):
            piece = body[start : start + CHUNK_BYTES]
            if drop is not None and sent + len(piece) > drop:
                if drop > sent:
                    yield piece[: drop - sent]
                raise SourceDropped(f"connection reset by the simulated source after {drop} B")
            await self.clock.sleep(CHUNK_DELAY_S)
            sent += len(piece)
            yield piece


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing
