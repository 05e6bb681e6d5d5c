"""API tokens: their format, their roles, and which role each route needs.

A token reads ``fabric_<id>_<secret>``: ``id`` names it in ``fabric token list`` and
in metadata (``token/<id>``, which holds the SHA-256 of the secret part, never the
secret); ``secret`` is 32 random bytes in URL-safe base64. A plain hash suffices because
the secret is random, not a password: nothing is gained by guessing at its hash.

The cluster's first admin token has the id ``admin`` and is derived from the cluster
secret (``ClusterKeys.admin_token_key``), so every node can check it before any token
is in metadata; ``fabric up`` writes it to the cluster directory. It can be revoked
like any other (a ``token/admin`` record marks it revoked).

Roles are ordered: ``read-only`` < ``operator`` < ``admin``. ``required_role`` is the
one table of who may do what; the API middleware asks it about every request.

Pure: no clock (times come in), no randomness (secrets come in).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

ROLES = ("read-only", "operator", "admin")
RANK = {role: rank for rank, role in enumerate(ROLES)}
ADMIN_ID = "admin"
PREFIX = "fabric_"
TOKEN_ID = re.compile(r"^[a-z0-9]{1,32}$")
_TOKEN = re.compile(r"^fabric_([a-z0-9]{1,32})_([A-Za-z0-9_-]{43})$")
SECRET_BYTES = 32

PUBLIC_PATHS = frozenset({"/api/v1/openapi.json", "/login", "/logout"})
"""Served to anyone: the API's description holds nothing about the cluster; the
console's login page is where a token is given."""
PUBLIC_PREFIXES = ("/static/",)
"""The console's stylesheet and scripts: the login page needs them too."""
CONSOLE_ACTIONS = {
    "/containers": "/api/v1/containers",
    "/containers/delete": "/api/v1/containers",
    "/vdisks": "/api/v1/vdisks",
    "/vdisks/delete": "/api/v1/vdisks",
    "/nodes/drain": "/api/v1/nodes",
    "/healing/rebuild": "/api/v1/rebuild",
    "/healing/scrub": "/api/v1/scrub",
    "/images": "/api/v1/images",
    "/images/import": "/api/v1/images",
    "/images/delete": "/api/v1/images",
    "/faults": "/api/v1/faults",
    "/faults/clear": "/api/v1/faults",
}
"""A console form and the API route it performs: it needs the same role."""
OPENABLE_PATHS = ("/metrics", "/api/v1/health")
"""What ``[auth] public`` in the config may open to scrapers and load balancers."""

_ADMIN_PREFIXES = (
    "/api/v1/tokens",
    "/api/v1/nodes",
    "/api/v1/containers",
    "/api/v1/rebuild",
    "/api/v1/scrub",
    "/api/v1/faults",
)
"""Mutations here change the cluster itself (its members, policies, settings, access)."""


class TokenError(Exception):
    """A presented token is malformed, unknown, revoked or wrong; the message says which."""


@dataclass(frozen=True)
class Parsed:
    id: str
    secret: str


def mint(token_id: str, secret: bytes) -> str:
    assert TOKEN_ID.match(token_id) and len(secret) == SECRET_BYTES, "a token id and 32 bytes"
    return f"{PREFIX}{token_id}_{base64.urlsafe_b64encode(secret).decode().rstrip('=')}"


def admin_token(admin_token_key: bytes) -> str:
    """The cluster's first admin token (``fabric.keys.ClusterKeys.admin_token_key``)."""
    return mint(ADMIN_ID, admin_token_key)


def parse(token: str) -> Parsed:
    m = _TOKEN.match(token)
    if m is None:
        raise TokenError("malformed token (expected fabric_<id>_<secret>)")
    return Parsed(m.group(1), m.group(2))


def secret_hash(parsed: Parsed) -> str:
    return hashlib.sha256(parsed.secret.encode()).hexdigest()


def matches(parsed: Parsed, stored_hash: str) -> bool:
    return hmac.compare_digest(secret_hash(parsed), stored_hash)


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header (None when there is none)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise TokenError("Authorization must be 'Bearer <token>'")
    return value.strip()


def required_role(method: str, path: str, public: frozenset[str] = frozenset()) -> str | None:
    """The least role that may make this request; None: anyone may."""
    if path in PUBLIC_PATHS or (path in public and path in OPENABLE_PATHS):
        return None
    if path.startswith(PUBLIC_PREFIXES):
        return None
    path = CONSOLE_ACTIONS.get(path, path)
    if path.startswith("/api/v1/tokens"):
        return "admin"  # even listing them: names and roles say who has access
    if method in ("GET", "HEAD", "OPTIONS"):
        return "read-only"
    if path.startswith(_ADMIN_PREFIXES):
        return "admin"
    return "operator"


def allows(role: str, needed: str) -> bool:
    return RANK.get(role, -1) >= RANK[needed]
