"""The OpenAPI document served at ``/api/v1/openapi.json``."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}


def _op(summary: str, ok: str = "200", **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "responses": {
            ok: {"description": "success"},
            "4XX": {
                "description": "bad request",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            "5XX": {
                "description": "cluster error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
        **extra,
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


_KEY = [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}]


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Storage fabric API", "version": "1"},
        "paths": {
            "/api/v1/health": {"get": _op("This node's view of itself: role, leader, term")},
            "/api/v1/cluster": {"get": _op("Nodes, roles, leader, states, containers")},
            "/api/v1/kv/{key}": {
                "parameters": _KEY,
                "get": _op("Read a metadata key (linearizable)"),
                "put": _op(
                    "Write a metadata key through the leader",
                    requestBody={
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["value"],
                                    "properties": {
                                        "value": {},
                                        "expect_version": {"type": "integer"},
                                    },
                                }
                            }
                        }
                    },
                ),
                "delete": _op("Delete a metadata key", ok="204"),
            },
            "/api/v1/containers": {
                "get": _op("Containers with policy, bytes, savings, resiliency"),
                "post": _op(
                    "Create a container",
                    ok="201",
                    requestBody=_json(
                        {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "rf": {"type": "integer"},
                                "dedup": {"type": "boolean"},
                                "compression": {"type": "string", "enum": ["none", "zstd"]},
                                "compression_level": {"type": "integer"},
                                "ec": {"type": "string", "example": "4+2"},
                                "ec_delay_s": {"type": "number"},
                            },
                        }
                    ),
                ),
            },
            "/api/v1/containers/{name}": {
                "parameters": [_path("name")],
                "get": _op("One container"),
                "delete": _op("Delete an empty container", ok="204"),
            },
            "/api/v1/vdisks": {
                "get": _op("Vdisks"),
                "post": _op(
                    "Create a vdisk",
                    ok="201",
                    requestBody=_json(
                        {
                            "type": "object",
                            "required": ["name", "container", "size"],
                            "properties": {
                                "name": {"type": "string"},
                                "container": {"type": "string"},
                                "size": {"type": "integer"},
                            },
                        }
                    ),
                ),
            },
            "/api/v1/vdisks/{id}": {
                "parameters": [_path("id")],
                "get": _op("One vdisk (by id or name)"),
                "delete": _op("Delete a vdisk and release its extents", ok="204"),
            },
            "/api/v1/vdisks/{id}/data": {
                "parameters": [_path("id")],
                "put": _op(
                    "Write the body at ?offset=N (Content-Length required)",
                    requestBody={"content": {"application/octet-stream": {}}},
                ),
                "get": _op("Read the vdisk; honours Range"),
            },
            "/api/v1/events": {
                "get": _op(
                    "The event log: node and disk states, rebuilds, scrub findings",
                    parameters=[
                        {"name": "since", "in": "query", "schema": {"type": "integer"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                        {"name": "kind", "in": "query", "schema": {"type": "string"}},
                    ],
                )
            },
            "/api/v1/rebuild": {
                "get": _op("Rebuild settings; bytes at reduced resiliency, rate, ETA"),
                "put": _op(
                    "Change the rebuild's rate, per-node concurrency or delay",
                    requestBody=_json(
                        {
                            "type": "object",
                            "properties": {
                                "bytes_per_s": {"type": "integer"},
                                "per_node": {"type": "integer"},
                                "delay_s": {"type": "number"},
                            },
                        }
                    ),
                ),
            },
            "/api/v1/scrub": {
                "get": _op("Scrub settings"),
                "put": _op(
                    "Change the scrub rate or cycle; now=true starts a pass on every node",
                    requestBody=_json(
                        {
                            "type": "object",
                            "properties": {
                                "bytes_per_s": {"type": "integer"},
                                "cycle_s": {"type": "number"},
                                "now": {"type": "boolean"},
                            },
                        }
                    ),
                ),
            },
            "/api/v1/nodes/{id}/drain": {
                "parameters": [_path("id")],
                "get": _op("A node's drain: draining, groups, strips and bytes it still holds"),
                "post": _op(
                    "Move every copy off the node (409 if RF or EC width could not be kept); "
                    "undo=true stops",
                    requestBody=_json(
                        {"type": "object", "properties": {"undo": {"type": "boolean"}}}
                    ),
                ),
            },
            "/metrics": {"get": _op("Prometheus metrics")},
        },
        "components": {"schemas": {"Error": _ERROR}},
    }
