"""The HTTP API every node serves (``/api/v1``), its OpenAPI document, and ``/metrics``.

Handlers are thin: they parse and validate the request, call a service, and shape the
answer. Every error leaves as ``{"error": {"code", "message"}}`` with a proper status:
``FabricError`` subclasses carry theirs, aiohttp's own (unknown route, wrong method)
are rewrapped, and anything else is a bug answered with 500 ``internal``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry

from fabric import limits
from fabric.errors import BadRequest, Conflict, FabricError, NotFound, TooLarge, from_code
from fabric.metadata import keys
from fabric.metadata.commands import Delete, Put
from nodes.metrics import exposition, node_registry
from nodes.node import Node, cluster_role
from nodes.openapi import Operation, document, operation, route_path
from nodes.schemas import check, from_query, parse_json

log = logging.getLogger(__name__)

NODE = web.AppKey("node", Node)
HEALTH_EXTRA: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("health_extra")
"""More for ``/api/v1/health`` from the runtime (the real one: its injected faults)."""
KV_PREFIX = "kv/"


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


CLUSTER_HEADER = "X-Fabric-Cluster"
STATUS_PATHS = frozenset({"/api/v1/health", "/api/v1/cluster", "/api/v1/openapi.json", "/metrics"})
"""Served even by a node out of service: they are how an operator learns why."""
API_PREFIX = "/api/"


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        _check_cluster(request)
        # The console's pages answer for themselves (nodes/console/app.py): they show an
        # operator why, in HTML, as the status paths do in JSON.
        if request.path.startswith(API_PREFIX) and request.path not in STATUS_PATHS:
            request.app[NODE].check_in_service()  # at once, not after a 10 s timeout
        return await handler(request)
    except FabricError as exc:
        return _error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400 or request.path.startswith("/internal/"):
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "bad_request"
        )
        return _error(exc.status, code, exc.reason if exc.text is None else exc.text)
    except Exception:
        log.exception("internal error serving %s %s", request.method, request.path)
        return _error(500, "internal", "internal error; see the node's log")


def _check_cluster(request: web.Request) -> None:
    """A request meant for another cluster (same ports, other directory) is refused."""
    want = request.headers.get(CLUSTER_HEADER)
    config = request.app[NODE].config
    if want and config.id and want != config.id:
        raise Conflict(
            f"this node serves cluster {config.name!r} (id {config.id}), not {want}; "
            "another cluster is using these ports"
        )


def declared(request: web.Request) -> Operation:
    """The operation ``nodes/openapi.py`` declares for the route that matched."""
    resource = request.match_info.route.resource
    assert resource is not None, "a handler's route has a resource"
    return operation(request.method, route_path(resource.canonical))


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON body, checked against its route's declared schema."""
    schema = declared(request).body
    assert schema is not None, f"{request.method} {request.path} declares no JSON body"
    body = parse_json(await read_capped(request, limits.MAX_JSON_BODY_BYTES))
    check(schema, body)
    assert isinstance(body, dict), "every declared body is an object"
    return body


async def read_capped(request: web.Request, cap: int) -> bytes:
    """The whole body, refused (413) once past ``cap`` bytes however it is framed.

    ``Content-Length`` only lets a too-large body be refused early: a chunked one
    announces nothing, so the count is kept as the bytes arrive.
    """
    if (request.content_length or 0) > cap:
        raise TooLarge(f"body of {request.content_length} bytes; at most {cap}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > cap:
            raise TooLarge(f"body larger than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def query(request: web.Request) -> dict[str, Any]:
    """The query parameters its route declares, converted and checked; others refused."""
    declared_params = declared(request).query
    for name in request.query:
        if name not in declared_params:
            known = ", ".join(declared_params) or "none"
            raise BadRequest(f"unknown query parameter {name!r} (parameters: {known})")
    out: dict[str, Any] = {}
    for name, schema in declared_params.items():
        values = request.query.getall(name, [])
        if len(values) > 1:
            raise BadRequest(f"query parameter {name!r} given {len(values)} times")
        if values:
            out[name] = from_query(name, schema, values[0])
    return out


# --- cluster ------------------------------------------------------------------------------
async def get_health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    raft = node.metadata.raft
    return web.json_response(
        {
            "id": node.id,
            "cluster": node.config.name,
            "cluster_id": node.config.id,
            "leader": node.metadata.leader,
            # The word `fabric status` uses; Raft's own word (follower, learner, ...) apart.
            "role": cluster_role(node.id, node.metadata.leader, node.membership.voters())
            if raft
            else "starting",
            "raft_role": raft.role.name.lower() if raft else "starting",
            "term": raft.term if raft else 0,
            "registered": node.registered,
            "applied_index": node.metadata.state.applied_index,
            "problems": node.problems(),
            "task_restarts": node.restarts,
            "conversions": node.images.converting,
            **({"faults": extra()} if (extra := request.app.get(HEALTH_EXTRA)) else {}),
        }
    )


async def get_cluster(request: web.Request) -> web.Response:
    return web.json_response(await request.app[NODE].cluster_view())


# --- the generic metadata key space -------------------------------------------------------
def kv_key(name: str) -> str:
    """The metadata key of kv key ``name`` (checked)."""
    if not name or len(name.encode()) > limits.MAX_KEY_BYTES:
        raise BadRequest(f"key must be 1..{limits.MAX_KEY_BYTES} bytes")
    return KV_PREFIX + name


async def kv_read(node: Node, name: str) -> dict[str, Any]:
    """``GET /api/v1/kv/{key}``'s answer: a linearizable read of kv key ``name``."""
    key = kv_key(name)
    await node.metadata.read_index()
    item = node.metadata.state.get(key)
    if item is None:
        raise NotFound(f"no key {name!r}")
    return {"key": name, "version": item.version, "value": item.value}


async def kv_write(node: Node, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """``PUT /api/v1/kv/{key}``'s answer, for a body its schema accepted."""
    key = kv_key(name)
    expect = body.get("expect_version")
    if expect is not None and (not isinstance(expect, int) or expect < 0):
        raise BadRequest("expect_version must be a non-negative integer")
    # The state machine refuses it too (and the total quota); this answers at once.
    if keys.kv_value_bytes(body["value"]) > limits.MAX_VALUE_BYTES:
        raise TooLarge(f"value larger than {limits.MAX_VALUE_BYTES} bytes as JSON")
    result = await node.metadata.propose(Put(key, body["value"], expect))
    if not result.ok:
        raise _refusal(result.code, result.message)
    return {"key": name, "version": result.value}


async def get_kv(request: web.Request) -> web.Response:
    return web.json_response(await kv_read(request.app[NODE], request.match_info["key"]))


async def put_kv(request: web.Request) -> web.Response:
    kv_key(request.match_info["key"])  # a bad key is refused before the body is read
    body = await json_body(request)
    return web.json_response(await kv_write(request.app[NODE], request.match_info["key"], body))


async def delete_kv(request: web.Request) -> web.Response:
    node = request.app[NODE]
    name = request.match_info["key"]
    key = kv_key(name)
    await node.metadata.read_index()
    if node.metadata.state.get(key) is None:
        raise NotFound(f"no key {name!r}")
    result = await node.metadata.propose(Delete(key))
    if not result.ok:
        raise _refusal(result.code, result.message)
    return web.Response(status=204)


def _refusal(code: str, message: str) -> FabricError:
    return from_code(code, message)


# --- observability ------------------------------------------------------------------------
async def get_metrics(request: web.Request) -> web.Response:
    # name[] narrows the answer to those series, as prometheus_client's own server does.
    body = exposition(request.app[REGISTRY], request.query.getall("name[]", []))
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


REGISTRY = web.AppKey("registry", CollectorRegistry)


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


def build_app(
    node: Node,
    extra_routes: list[web.RouteDef],
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """The node's app; ``middlewares`` run inside ``errors`` (which shapes their refusals)."""
    app = web.Application(
        middlewares=[errors, *middlewares], client_max_size=limits.MAX_MESSAGE_BYTES
    )
    app[NODE] = node
    app[REGISTRY] = node_registry(node)
    app.add_routes(
        [
            web.get("/api/v1/health", get_health),
            web.get("/api/v1/cluster", get_cluster),
            web.get("/api/v1/kv/{key:.+}", get_kv),
            web.put("/api/v1/kv/{key:.+}", put_kv),
            web.delete("/api/v1/kv/{key:.+}", delete_kv),
            web.get("/api/v1/openapi.json", get_openapi),
            web.get("/metrics", get_metrics),
            *extra_routes,
        ]
    )
    return app
