"""The console's session: its paths, its cookie, and the same-origin rule of its forms.

The cookie holds the API token itself (HttpOnly: no script reads it; SameSite=Strict: no
other site's page makes the browser send it). Requests that change something must
also say they come from a page of this node: their ``Origin`` (or, failing that,
``Referer``) names this host, else they are refused before any handler runs.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from aiohttp import web

COOKIE = "fabric_session"
FLASH_COOKIE = "fabric_flash"
"""A one-time message for the page a form redirects to ("container x created")."""
_NOT_CONSOLE = ("/api/", "/internal/")
_LOCAL_PATH = re.compile(r"/(?![/\\])[\x21-\x7e]*")
"""A path of this node: ``/`` then no second slash or backslash, printable ASCII only."""


def owns(path: str) -> bool:
    """Whether ``path`` is the console's (everything but the API, peers and metrics)."""
    return not path.startswith(_NOT_CONSOLE) and path != "/metrics"


def token(request: web.Request) -> str | None:
    """The token of the session cookie of a console request (None: not logged in)."""
    if not owns(request.path):
        return None  # the API takes bearer tokens only: a cookie never authorises it
    return request.cookies.get(COOKIE) or None


def same_origin(request: web.Request) -> bool:
    """Whether a state-changing request comes from a page of this node (CSRF check)."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme == request.scheme and parts.netloc == request.host


def safe_next(target: str | None) -> str:
    """Where to go after login: a path of this node, never another site (browsers read a
    backslash as a slash and drop tabs and newlines, so those make ``//host`` too)."""
    if not target or not _LOCAL_PATH.fullmatch(target):
        return "/"
    return target


def log_in(response: web.StreamResponse, request: web.Request, presented: str) -> None:
    response.set_cookie(
        COOKIE,
        presented,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def log_out(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")
