"""Who may call the API: bearer tokens with roles, checked before any handler runs.

``access`` is the middleware: it finds the role a route needs (``fabric.tokens``), reads
the request's ``Authorization: Bearer`` token, and refuses with 401 (no token, or one
that proves nothing) or 403 (a token whose role is too low). The console's pages
present their token in a session cookie instead (``nodes.console.session``); it is
checked the same way. Node-to-node paths
(``/internal/``) are not its business: the transport authenticates those itself.

Tokens are read from the node's own copy of the metadata, kept at most
``limits.TOKEN_STALENESS_S`` behind the leader: a token check that finds the last
catch-up (a ReadIndex, shared by the requests that wait for it) older than that makes a
new one first. So a revocation holds on every node within that time, and the revoke call
waits it out before it answers: when ``fabric token revoke`` returns, no node accepts
the token. A node cut off from the leader checks against what it has (it can change
nothing then). A token unknown to the node may be a moment old: it catches up once
before refusing it, so a new token works on every node as soon as it is returned.

The routes under ``/api/v1/tokens`` create, list and revoke tokens (admin only).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiohttp import web

from fabric import limits, tokens
from fabric.errors import (
    BadRequest,
    FabricError,
    Forbidden,
    NotFound,
    Unauthorized,
    from_code,
)
from fabric.metadata import access
from fabric.metadata.commands import SetToken
from fabric.metadata.records import TokenRecord
from nodes.api import NODE, json_body
from nodes.console import session
from nodes.node import Node

log = logging.getLogger(__name__)


@web.middleware
async def check_access(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path.startswith("/internal/"):
        return await handler(request)
    gate = request.app[GATE]
    needed = tokens.required_role(request.method, request.path, gate.public)
    if needed is None:
        return await handler(request)
    try:
        presented = tokens.bearer(request.headers.get("Authorization"))
    except tokens.TokenError as exc:
        raise Unauthorized(str(exc)) from None
    presented = presented or session.token(request)  # the console's cookie: same checks
    if presented is None:
        raise Unauthorized(
            "this API needs a token: send 'Authorization: Bearer <token>' "
            "(the cluster directory's admin.token, or one from `fabric token create`)"
        )
    await gate.ensure_fresh()
    record = await gate.verify(presented)
    if not tokens.allows(record.role, needed):
        raise Forbidden(
            f"token {record.id} has role {record.role}; {request.method} {request.path} "
            f"needs {needed}"
        )
    request["token"] = record
    return await handler(request)


class TokenGate:
    """What token checks need, computed once per node, and the node's freshness for
    them: its metadata no more than ``TOKEN_STALENESS_S`` behind the leader's."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.public = frozenset(node.config.public_paths)
        keys = node.runtime.keys
        self.admin_token = tokens.admin_token(keys.admin_token_key) if keys is not None else ""
        """Empty without a cluster secret: then no admin token is accepted."""
        self.fresh_at = float("-inf")
        """Clock time a completed catch-up started: the state holds everything before it."""
        self.tried_at = float("-inf")
        """When the last catch-up started, done or not: a node cut off from the leader
        tries once per interval and checks on its own state meanwhile (its status must
        stay readable), never making each request wait for a leader that is not there."""
        self._pending: asyncio.Future[None] | None = None
        self._pending_started = float("-inf")

    async def ensure_fresh(self) -> None:
        now = self.node.runtime.clock.now()
        if now - max(self.fresh_at, self.tried_at) > limits.TOKEN_STALENESS_S:
            await self._catch_up_after(now)

    async def _catch_up_after(self, moment: float) -> None:
        """Wait for a catch-up that started at or after ``moment``: one already under way
        is shared by every request it covers, so a burst of requests (or of unknown
        tokens) costs the leader one ReadIndex, not one each."""
        while True:
            pending = self._pending
            if pending is None:
                self._pending_started = self.tried_at = self.node.runtime.clock.now()
                pending = self._pending = asyncio.ensure_future(self._catch_up())
            covers = self._pending_started >= moment
            await asyncio.shield(pending)
            if covers:
                return

    async def _catch_up(self) -> None:
        started = self._pending_started
        try:
            await asyncio.wait_for(self.node.metadata.read_index(), limits.TOKEN_CATCH_UP_TIMEOUT_S)
            self.fresh_at = started
        except (FabricError, TimeoutError) as exc:
            log.debug("token check on local state: no catch-up (%s)", exc)
        finally:
            self._pending = None

    async def verify(self, presented: str) -> TokenRecord:
        try:
            parsed = tokens.parse(presented)
        except tokens.TokenError as exc:
            raise Unauthorized(str(exc)) from None
        state = self.node.metadata.state
        record = access.token(state, parsed.id)
        if record is None and parsed.id != tokens.ADMIN_ID:
            # Created on another node a moment ago? Catch up once, from now on.
            await self._catch_up_after(self.node.runtime.clock.now())
            record = access.token(state, parsed.id)
        if record is not None and record.revoked:
            raise Unauthorized(f"token {parsed.id} was revoked")
        if parsed.id == tokens.ADMIN_ID:
            if not self.admin_token or not secrets.compare_digest(presented, self.admin_token):
                raise Unauthorized("wrong token")
            return TokenRecord(tokens.ADMIN_ID, "cluster admin", "admin", "", 0.0)
        if record is None or not tokens.matches(parsed, record.secret_sha256):
            raise Unauthorized("wrong token")  # the same answer: ids are not to be probed
        return record


GATE = web.AppKey("token_gate", TokenGate)


def install(app: web.Application) -> None:
    """What ``check_access`` needs on the app."""
    app[GATE] = TokenGate(app[NODE])


def _view(record: TokenRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "created": record.created_wall,
        "revoked": record.revoked,
    }


async def create_token(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await json_body(request)
    unknown = sorted(set(body) - {"name", "role"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}")
    name, role = body.get("name"), body.get("role", "read-only")
    if not isinstance(name, str) or not 0 < len(name) <= 128:
        raise BadRequest("name: a string of 1..128 characters saying who the token is for")
    if role not in tokens.ROLES:
        raise BadRequest(f"role: one of {', '.join(tokens.ROLES)}")
    token_id = secrets.token_hex(6)
    secret = secrets.token_bytes(tokens.SECRET_BYTES)
    token = tokens.mint(token_id, secret)
    record = TokenRecord(
        token_id, name, role, tokens.secret_hash(tokens.parse(token)), node.runtime.clock.wall()
    )
    result = await node.metadata.propose(SetToken(record, record.created_wall))
    if not result.ok:
        raise from_code(result.code, result.message)
    # The only time the token is shown: metadata keeps its hash.
    return web.json_response({**_view(record), "token": token}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    node = request.app[NODE]
    await node.metadata.read_index()
    records = sorted(access.tokens(node.metadata.state).values(), key=lambda r: r.created_wall)
    return web.json_response({"tokens": [_view(r) for r in records]})


async def revoke_token(request: web.Request) -> web.Response:
    node = request.app[NODE]
    token_id = request.match_info["id"]
    if not tokens.TOKEN_ID.match(token_id):
        raise BadRequest("a token id is 1..32 lowercase letters and digits")
    await node.metadata.read_index()
    record = access.token(node.metadata.state, token_id)
    if record is None and token_id != tokens.ADMIN_ID:
        raise NotFound(f"no token {token_id}")
    if token_id == request["token"].id:
        raise BadRequest("a token cannot revoke itself; use another admin token")
    revoked = record or TokenRecord(token_id, "cluster admin", "admin", "0" * 64, 0.0)
    wall = node.runtime.clock.wall()
    result = await node.metadata.propose(SetToken(replace(revoked, revoked=True), wall))
    if not result.ok:
        raise from_code(result.code, result.message)
    # Every node catches up within this time (Freshness): after it, none accepts the token.
    await node.runtime.clock.sleep(limits.TOKEN_STALENESS_S)
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/tokens", create_token),
        web.get("/api/v1/tokens", list_tokens),
        web.delete("/api/v1/tokens/{id}", revoke_token),
    ]
