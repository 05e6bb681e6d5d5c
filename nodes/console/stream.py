"""``/console/stream``: the summary fragment as server-sent events, for the summary page.

Each send is the whole fragment, rendered as the page renders it (htmx's SSE extension
swaps it in): nothing to merge on the client, and a page without JavaScript simply
reloads. The token is checked again before every send, so a revoked one stops its
streams within ``TOKEN_STALENESS_S``, and a stream ends after ``CONSOLE_STREAM_MAX_S``
(the browser reconnects, through the same checks as any request) or when the node
shuts down: an open console tab must not hold up ``fabric down``. At most
``CONSOLE_STREAMS_MAX`` are open on a node at once; one more is answered 503 with
``Retry-After``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp_jinja2
from aiohttp import web
from aiohttp_sse import sse_response

from fabric import limits, tokens
from fabric.errors import Unauthorized
from nodes.api import NODE
from nodes.api_access import GATE
from nodes.console import session
from nodes.console.pages import page
from nodes.console.summary import summary
from nodes.node import Node

EVENT = "summary"
STOPPING = web.AppKey("console_stopping", asyncio.Event)
"""Set when the node's app shuts down: every stream ends at once."""


@dataclass
class OpenStreams:
    """How many streams the app holds open now (a holder: an app's state is set once)."""

    count: int = 0


OPEN = web.AppKey("console_streams", OpenStreams)


async def stream(request: web.Request) -> web.StreamResponse:
    opened = request.app[OPEN]
    if opened.count >= limits.CONSOLE_STREAMS_MAX:
        return _refused(request)
    opened.count += 1
    try:
        return await _send_summaries(request)
    finally:
        opened.count -= 1


def _refused(request: web.Request) -> web.Response:
    message = (
        f"this node already sends {limits.CONSOLE_STREAMS_MAX} live summaries; "
        "the page works without one but does not update live until one closes"
    )
    response = page(request, "error.html", {"status": 503, "message": message}, 503)
    response.headers["Retry-After"] = str(round(limits.CONSOLE_REFRESH_S))
    return response


async def _send_summaries(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    clock = node.runtime.clock
    gate = request.app[GATE]
    # Whichever way the token came (check_access has accepted it), it is checked again.
    presented = tokens.bearer(request.headers.get("Authorization")) or session.token(request)
    started = clock.now()
    stopping = request.app[STOPPING]
    async with sse_response(request) as response:
        while (
            response.is_connected()
            and not stopping.is_set()
            and clock.now() - started < limits.CONSOLE_STREAM_MAX_S
        ):
            try:
                await gate.ensure_fresh()
                await gate.verify(presented or "")
            except Unauthorized:
                break
            context = {"summary": await summary(node)}
            html = aiohttp_jinja2.render_string("_summary.html", request, context)
            await response.send(html, event=EVENT)
            await _pause(node, stopping)
    return response


async def _pause(node: Node, stopping: asyncio.Event) -> None:
    """``CONSOLE_REFRESH_S`` on the node's clock, or less if the node shuts down."""
    waits = {
        asyncio.ensure_future(node.runtime.clock.sleep(limits.CONSOLE_REFRESH_S)),
        asyncio.ensure_future(stopping.wait()),
    }
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def _stop_streams(app: web.Application) -> None:
    app[STOPPING].set()


def install(app: web.Application) -> None:
    app[STOPPING] = asyncio.Event()
    app[OPEN] = OpenStreams()
    app.on_shutdown.append(_stop_streams)
    app.add_routes([web.get("/console/stream", stream)])
