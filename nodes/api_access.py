"""Who may call the API: bearer tokens with roles, checked before any handler runs.

``access`` is the middleware: it finds the role a route needs (``fabric.tokens``), reads
the request's ``Authorization: Bearer`` token, and refuses with 401 (no token, or one
that proves nothing) or 403 (a token whose role is too low). Node-to-node paths
(``/internal/``) are not its business: the transport authenticates those itself.

A token unknown to this node's state may have been created a moment ago on another
node: before refusing it, the node catches up with the leader once (a ReadIndex), so a
token works on every node as soon as ``fabric token create`` has returned.

The routes under ``/api/v1/tokens`` create, list and revoke tokens (admin only).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiohttp import web

from fabric import tokens
from fabric.errors import BadRequest, Forbidden, NotFound, Unauthorized, from_code
from fabric.metadata import access
from fabric.metadata.commands import SetToken
from fabric.metadata.records import TokenRecord
from nodes.api import NODE, json_body
from nodes.node import Node

log = logging.getLogger(__name__)


@web.middleware
async def check_access(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path.startswith("/internal/"):
        return await handler(request)
    node = request.app[NODE]
    needed = tokens.required_role(request.method, request.path, frozenset(node.config.public_paths))
    if needed is None:
        return await handler(request)
    try:
        presented = tokens.bearer(request.headers.get("Authorization"))
    except tokens.TokenError as exc:
        raise Unauthorized(str(exc)) from None
    if presented is None:
        raise Unauthorized(
            "this API needs a token: send 'Authorization: Bearer <token>' "
            "(the cluster directory's admin.token, or one from `fabric token create`)"
        )
    record = await _verify(node, presented)
    if not tokens.allows(record.role, needed):
        raise Forbidden(
            f"token {record.id} has role {record.role}; {request.method} {request.path} "
            f"needs {needed}"
        )
    request["token"] = record
    return await handler(request)


async def _verify(node: Node, presented: str) -> TokenRecord:
    try:
        parsed = tokens.parse(presented)
    except tokens.TokenError as exc:
        raise Unauthorized(str(exc)) from None
    record = access.token(node.metadata.state, parsed.id)
    if record is None and parsed.id != tokens.ADMIN_ID:
        await node.metadata.read_index()  # created on another node a moment ago?
        record = access.token(node.metadata.state, parsed.id)
    if record is not None and record.revoked:
        raise Unauthorized(f"token {parsed.id} was revoked")
    if parsed.id == tokens.ADMIN_ID:
        keys = node.runtime.keys
        if keys is None or not secrets.compare_digest(
            presented, tokens.admin_token(keys.admin_token_key)
        ):
            raise Unauthorized("wrong token")
        return TokenRecord(tokens.ADMIN_ID, "cluster admin", "admin", "", 0.0)
    if record is None or not tokens.matches(parsed, record.secret_sha256):
        raise Unauthorized("wrong token")  # the same answer: ids are not to be probed
    return record


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
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/tokens", create_token),
        web.get("/api/v1/tokens", list_tokens),
        web.delete("/api/v1/tokens/{id}", revoke_token),
    ]
