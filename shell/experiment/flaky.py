"""A flaky import source: the runner's file server, breaking off responses on purpose.

``GET /flaky/NAME?drop=P`` answers like a plain static server (200, or 206 for
``Range: bytes=N-``) and announces the whole length it will send; with probability P it
then sends only part of the body and closes the connection. The node's import sees a
body shorter than announced and must resume it with ``Range`` from where it broke.
Whether and where a response breaks comes from one seeded ``random.Random``.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

CHUNK_BYTES = 64 << 10
RANGE = re.compile(r"^bytes=(\d+)-$")


def handler(
    root: str, rng: random.Random, stats: dict[str, int] | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The route's handler; ``stats`` counts ``responses``, ``broken`` ones and ``resumed``
    ones (those that answered a Range request)."""
    counts = stats if stats is not None else {}
    for key in ("responses", "broken", "resumed"):
        counts.setdefault(key, 0)

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if "/" in name or name.startswith("."):
            raise web.HTTPNotFound()
        path = os.path.join(root, name)
        try:
            size = os.path.getsize(path)
        except OSError:
            raise web.HTTPNotFound() from None
        start = _start(request.headers.get("Range", ""), size)
        try:
            drop = float(request.query.get("drop", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="drop must be a number") from None
        length = size - start
        # At least one byte gets through, so every resume moves the import forward.
        cut = 1 + rng.randrange(length) if length > 1 and rng.random() < drop else length
        counts["responses"] += 1
        counts["resumed"] += 1 if start else 0
        counts["broken"] += 1 if cut < length else 0
        resp = web.StreamResponse(status=206 if start else 200)
        resp.content_length = length
        resp.headers["Accept-Ranges"] = "bytes"
        if start:
            resp.headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        await resp.prepare(request)
        with open(path, "rb") as f:
            f.seek(start)
            sent = 0
            while sent < cut:
                chunk = f.read(min(CHUNK_BYTES, cut - sent))
                if not chunk:
                    break
                await resp.write(chunk)
                sent += len(chunk)
        if cut < length:
            # The body is shorter than announced: the client sees the connection break.
            if request.transport is not None:
                request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    return serve


def _start(header: str, size: int) -> int:
    if not header:
        return 0
    m = RANGE.match(header.strip())
    if m is None or int(m.group(1)) >= size:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return int(m.group(1))
