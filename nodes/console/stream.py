"""``/console/stream``: the summary fragment as server-sent events, for the summary page.

Each send is the whole fragment, rendered as the page renders it (htmx's SSE extension
swaps it in): nothing to merge on the client, and a page without JavaScript simply
reloads. The token is checked again before every send, so a revoked one stops its
streams within ``TOKEN_STALENESS_S``, and a stream ends after ``CONSOLE_STREAM_MAX_S``
(the browser reconnects, through the same checks as any request).
"""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web
from aiohttp_sse import sse_response

from fabric import limits, tokens
from fabric.errors import Unauthorized
from nodes.api import NODE
from nodes.api_access import GATE
from nodes.console import session
from nodes.console.summary import summary

EVENT = "summary"


async def stream(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    clock = node.runtime.clock
    gate = request.app[GATE]
    # Whichever way the token came (check_access has accepted it), it is checked again.
    presented = tokens.bearer(request.headers.get("Authorization")) or session.token(request)
    started = clock.now()
    async with sse_response(request) as response:
        while response.is_connected() and clock.now() - started < limits.CONSOLE_STREAM_MAX_S:
            try:
                await gate.ensure_fresh()
                await gate.verify(presented or "")
            except Unauthorized:
                break
            context = {"summary": await summary(node)}
            html = aiohttp_jinja2.render_string("_summary.html", request, context)
            await response.send(html, event=EVENT)
            await clock.sleep(limits.CONSOLE_REFRESH_S)
    return response


def routes() -> list[web.RouteDef]:
    return [web.get("/console/stream", stream)]
