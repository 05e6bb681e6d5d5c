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
            "/metrics": {"get": _op("Prometheus metrics")},
        },
        "components": {"schemas": {"Error": _ERROR}},
    }
