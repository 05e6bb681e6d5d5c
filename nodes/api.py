"""The HTTP API every node serves (``/api/v1``), its OpenAPI document, and ``/metrics``.

Handlers are thin: they parse and validate the request, call a service, and shape the
answer. Every error leaves as ``{"error": {"code", "message"}}`` with a proper status:
``FabricError`` subclasses carry theirs, aiohttp's own (unknown route, wrong method)
are rewrapped, and anything else is a bug answered with 500 ``internal``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fabric import limits
from fabric.errors import BadRequest, Conflict, FabricError, NotFound, TooLarge, from_code
from fabric.metadata import keys
from fabric.metadata.commands import Delete, Put
from nodes.node import Node
from nodes.openapi import Operation, document, operation, route_path
from nodes.schemas import check, from_query, parse_json
from nodes.services.accounting import container_views

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


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        _check_cluster(request)
        if request.path not in STATUS_PATHS and not request.path.startswith("/internal/"):
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
            "role": raft.role.name.lower() if raft else "starting",
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
DISK_STATE_CODES = {"UP": 0, "FULL": 1, "FAILED": 2}


class NodeCollector(Collector):
    """Reads the node's live numbers at scrape time: nothing is double-booked."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self.node
        raft = node.metadata.raft
        labels = ["node"]
        gauges = {
            "fabric_raft_term": ("Current Raft term", raft.term if raft else 0),
            "fabric_raft_commit_index": ("Raft commit index", raft.commit_index if raft else 0),
            "fabric_metadata_applied_index": (
                "Metadata index applied on this node",
                node.metadata.state.applied_index,
            ),
            "fabric_is_leader": (
                "1 if this node is the metadata leader",
                int(node.metadata.is_leader) if raft else 0,
            ),
        }
        for name, (doc, value) in gauges.items():
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric([node.id], value)
            yield g
        c = CounterMetricFamily(
            "fabric_metadata_commands_applied", "Metadata commands applied", labels=labels
        )
        c.add_metric([node.id], node.metadata.commits)
        yield c
        refused = CounterMetricFamily(
            "fabric_peer_requests_refused",
            "Node-to-node requests refused by authentication, by the check that failed",
            labels=["node", "check"],
        )
        for failed, count in sorted(getattr(node.runtime.transport, "refused", {}).items()):
            refused.add_metric([node.id, failed], count)
        yield refused
        pulled = CounterMetricFamily(
            "fabric_rebuild_pulled_bytes",
            "Bytes this node read from each source node to make rebuild copies",
            labels=["node", "source"],
        )
        for source, count in sorted(node.copier.stats.bytes_from.items()):
            pulled.add_metric([node.id, source], count)
        yield pulled
        states = GaugeMetricFamily(
            "fabric_node_up", "1 if the node is UP in the replicated metadata", labels=["peer"]
        )
        for peer, record in node.metadata.state.nodes().items():
            states.add_metric([peer], int(record.state == "UP"))
        yield states
        yield from self._containers()
        yield from self._healing()
        yield from self._io()
        yield self._refusals()

    def _refusals(self) -> CounterMetricFamily:
        c = CounterMetricFamily(
            "fabric_peer_messages_refused",
            "Messages from other nodes refused before any handler saw them, by reason",
            labels=["node", "reason"],
        )
        for reason, n in self.node.transport.refusals.by_reason.items():
            c.add_metric([self.node.id, reason], n)
        return c

    def _containers(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        views = container_views(self.node.metadata.state)
        for field, doc in (
            ("logical_bytes", "Bytes written by users, holes excluded"),
            ("unique_bytes", "Logical bytes after dedup"),
            ("stored_bytes", "Unique bytes after compression"),
            ("physical_bytes", "Bytes on disks, every copy and unreclaimed space counted"),
            ("resiliency", "Further node failures every extent group survives now"),
        ):
            g = GaugeMetricFamily(f"fabric_container_{field}", doc, labels=["container"])
            for v in views:
                g.add_metric([v["name"]], v[field])
            yield g
        rebuild = self.node.rebuild
        progress = rebuild.progress()
        g = GaugeMetricFamily(
            "fabric_container_reduced_resiliency_bytes",
            "Bytes with a copy or strip member on a node that is not UP",
            labels=["container"],
        )
        for v in views:
            g.add_metric([v["name"]], progress[v["name"]]["reduced_resiliency_bytes"])
        yield g
        c = CounterMetricFamily(
            "fabric_container_rebuilt_bytes",
            "Bytes copied or recomputed to restore lost copies and strip members",
            labels=["container"],
        )
        for v in views:
            c.add_metric([v["name"]], v["rebuilt_bytes"])
        yield c
        c = CounterMetricFamily(
            "fabric_container_reduced_resiliency_seconds",
            "Seconds this node saw some of the container's data at reduced resiliency",
            labels=["container"],
        )
        for name, watch in sorted(rebuild.watch.items()):
            c.add_metric([name], watch.reduced_seconds)
        yield c

    def _healing(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        node = self.node
        g = GaugeMetricFamily(
            "fabric_scrub_last_pass_end_seconds",
            "When this node's last full scrub pass ended (Unix time; 0: never)",
            labels=["node"],
        )
        g.add_metric([node.id], node.scrubber.stats.last_pass_end_wall)
        yield g
        status = node.disk_watch.status
        for name, doc, attr in (
            ("fabric_disk_state", "This node's disks: 0 UP, 1 FULL, 2 FAILED", None),
            ("fabric_disk_used_bytes", "Bytes used on this node's disks", "used_bytes"),
            ("fabric_disk_capacity_bytes", "Capacity of this node's disks", "capacity_bytes"),
        ):
            g = GaugeMetricFamily(name, doc, labels=["node", "disk"])
            for disk, st in status.items():
                number = DISK_STATE_CODES[st.state] if attr is None else getattr(st, attr)
                g.add_metric([node.id, disk], number)
            yield g
        if node.metadata.is_leader:
            for name, value, doc in (
                ("copies", node.rebuild.stats.copies, "Rebuild copies committed (leader)"),
                ("copies_failed", node.rebuild.stats.failed, "Rebuild copies that failed"),
            ):
                c = CounterMetricFamily(f"fabric_rebuild_leader_{name}", doc, labels=["node"])
                c.add_metric([node.id], value)
                yield c

    def _io(self) -> Iterator[CounterMetricFamily]:
        node = self.node
        counters = {
            "fabric_write_batches": ("Write batches committed", node.writer.stats.batches),
            "fabric_write_retries": (
                "Write batches redone after a conflict",
                node.writer.stats.retries,
            ),
            "fabric_dedup_hits": (
                "Extents stored as a reference to existing content",
                node.writer.stats.dedup_hits,
            ),
            "fabric_degraded_reads": (
                "Extent reads that skipped an unreachable replica",
                node.reader.stats.degraded_reads,
            ),
            "fabric_replica_repairs": (
                "Bad extent copies rewritten from a good one",
                node.reader.stats.repairs,
            ),
            "fabric_storage_written_bytes": (
                "Bytes appended to local extent groups",
                node.storage.bytes_written,
            ),
            "fabric_storage_read_bytes": (
                "Bytes read from local extent groups",
                node.storage.bytes_read,
            ),
            "fabric_ec_converted_bytes": (
                "Data bytes of extent groups converted to erasure-coded strips",
                node.ec.stats.converted_bytes,
            ),
            "fabric_ec_convert_seconds": (
                "Seconds spent converting groups to strips (committed or rolled back)",
                node.ec.stats.convert_seconds,
            ),
            "fabric_rebuild_copied_bytes": (
                "Bytes this node copied as the target of a rebuild",
                node.copier.stats.bytes_copied,
            ),
            "fabric_rebuild_copies_failed": (
                "Rebuild copies this node failed to make as a target",
                node.copier.stats.failed,
            ),
            "fabric_rebuild_bad_ranges": (
                "Extents a rebuild found bad on one source and read from another",
                node.copier.stats.bad_ranges,
            ),
            "fabric_scrub_bytes": (
                "Bytes re-read and verified by the scrubber",
                node.scrubber.stats.bytes_scrubbed,
            ),
            "fabric_scrub_errors": (
                "Extents the scrubber found failing their checksum",
                node.scrubber.stats.errors_found,
            ),
            "fabric_scrub_repaired": (
                "Bad extents the scrubber rewrote from a good copy",
                node.scrubber.stats.repaired,
            ),
            "fabric_scrub_passes": (
                "Full scrub passes over this node's groups",
                node.scrubber.stats.passes,
            ),
            "fabric_scanner_reclaimed_bytes": (
                "Bytes freed by collecting extent groups",
                node.scanner.stats.bytes_reclaimed,
            ),
        }
        for name, (doc, value) in counters.items():
            c = CounterMetricFamily(name, doc, labels=["node"])
            c.add_metric([node.id], value)
            yield c


async def get_metrics(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")


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
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    app[REGISTRY] = registry
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
