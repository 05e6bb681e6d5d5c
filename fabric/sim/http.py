"""Simulated URL sources for URL import: bytes served on virtual time, drops scripted.

``SimHttp`` implements the ``Fetcher`` port. A test registers a source with the bytes
it serves and, per request, how many bytes to send before the connection drops; the
import under test then resumes with Range requests exactly as it would against a real
server, on the simulator's clock and with nothing random outside the seed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fabric.ports import Clock, SourceDropped, SourceFailed, SourceHead

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


class SimHttp:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sources: dict[str, SimSource] = {}
        self.requests: list[tuple[str, int]] = []
        """(url, offset) of every GET, in order."""

    def serve(self, url: str, source: SimSource) -> None:
        self.sources[url] = source

    @contextlib.asynccontextmanager
    async def get(
        self, url: str, offset: int
    ) -> AsyncIterator[tuple[SourceHead, AsyncIterator[bytes]]]:
        self.requests.append((url, offset))
        source = self.sources.get(url)
        if source is None:
            raise SourceFailed(f"cannot connect: no simulated source at {url}")
        if source.status != 200:
            yield SourceHead(source.status, "simulated error", 0), _empty()
            return
        start = offset if source.ranges else 0
        body = source.data[start:]
        drop = source.drops.pop(0) if source.drops else None
        status = 206 if offset and source.ranges else 200
        yield SourceHead(status, "OK", len(body)), self._chunks(body, drop)

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
