"""The console on a node's app: templates, static files, routes, and its middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web

from fabric.errors import FabricError, Unauthorized
from nodes.api import NODE
from nodes.console import actions, charts, faults, healing, images, pages, session, stream
from nodes.console.units import FILTERS

HERE = Path(__file__).parent
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_PATHS = frozenset({"/login", "/logout"})
"""Forms that change only the browser's session: they work on a node out of service."""
SECURITY_HEADERS = {
    # Scripts and styles from this node only; no page of another site may frame it.
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@web.middleware
async def console_pages(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refusals of console requests as pages: no token goes to the login page, a role
    too low or a bad request gets an HTML page with the API's message. A form POST from
    another site is refused before anything else; on a node out of service, so is any
    form but logging in or out (its pages still show the cluster, and why)."""
    if not session.owns(request.path):
        return await handler(request)
    if request.method not in SAFE_METHODS and not session.same_origin(request):
        message = "cross-site request refused: a form must be sent from this node's pages"
        return _with_headers(_error(request, 403, message))
    try:
        if request.method not in SAFE_METHODS and request.path not in SESSION_PATHS:
            request.app[NODE].check_in_service()
        response = await handler(request)
    except Unauthorized as exc:
        if request.method in SAFE_METHODS:
            target = "/login?" + urlencode({"next": request.path_qs})
            response = web.Response(status=303, headers={"Location": target})
        else:
            response = _error(request, 401, f"{exc.message}; log in again")
    except FabricError as exc:
        response = _error(request, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(request, exc.status, exc.reason)  # no such page, wrong method
    return _with_headers(response)


def _error(request: web.Request, status: int, message: str) -> web.Response:
    return pages.page(request, "error.html", {"status": status, "message": message}, status)


def _with_headers(response: web.StreamResponse) -> web.StreamResponse:
    if not response.prepared:  # a stream's headers are out already
        response.headers.update(SECURITY_HEADERS)
    return response


def install(app: web.Application) -> None:
    """Templates and the console's routes on the node's ``app``."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        filters=FILTERS,
        undefined=jinja2.StrictUndefined,
    )
    app.add_routes(
        [
            *pages.routes(),
            *actions.routes(),
            *healing.routes(),
            *images.routes(),
            *faults.routes(),
            web.static("/static", HERE / "static"),
        ]
    )
    stream.install(app)
    charts.install(app)
