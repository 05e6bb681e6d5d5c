"""Request schemas: hostile JSON is refused as a 400 naming the problem, and the OpenAPI
document lists exactly the routes the node serves."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from fabric import limits
from fabric.errors import BadRequest
from nodes.api import build_app
from nodes.main import api_routes
from nodes.openapi import (
    CONTAINER_REQUEST,
    IMAGE_REQUEST,
    MEMBER_REQUEST,
    OPERATIONS,
    SCRUB_REQUEST,
    VDISK_REQUEST,
    document,
    route_path,
)
from nodes.schemas import check, from_query, integer, parse_json
from tests.sim.conftest import started


def refused(raw: bytes | str, fragment: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_json(raw.encode() if isinstance(raw, str) else raw)
    assert fragment in err.value.message, err.value.message


def test_hostile_json_is_refused_naming_the_problem() -> None:
    depth = limits.MAX_JSON_DEPTH
    refused("[" * 100_000 + "]" * 100_000, "nested deeper")
    refused('{"a":' * (depth + 1) + "1" + "}" * (depth + 1), "nested deeper")
    refused("[" * (depth + 1) + "]" * (depth + 1), "nested deeper")
    refused('{"value": ' + "9" * 5000 + "}", "out of range")
    refused('{"value": 18446744073709551616}', "out of range")
    refused('{"value": -9223372036854775808}', "out of range")
    for constant in ("NaN", "Infinity", "-Infinity"):
        refused(f'{{"size": {constant}}}', "finite")
    refused('{"size": 1e400}', "finite")
    refused('{"value": "\\ud800"}', "lone surrogate")
    refused('{"\\udfff": 1}', "lone surrogate")
    refused('{"a": 1, "a": 2}', "given twice")
    refused(b'{"a": "\xff"}', "not UTF-8")
    refused("{'a': 1}", "not valid JSON")
    refused(" \n", "not valid JSON")  # no body is {}; blank space is not JSON


def test_json_at_the_limits_parses() -> None:
    depth = limits.MAX_JSON_DEPTH
    assert parse_json(("[" * depth + "]" * depth).encode()) is not None
    assert parse_json(b"") == {}
    top = limits.MAX_JSON_INT
    assert parse_json(f'{{"a": {top}, "b": -{top}, "c": 1.5e300}}'.encode()) == {
        "a": top,
        "b": -top,
        "c": 1.5e300,
    }
    assert parse_json('{"s": "\\ud83d\\ude00 é"}'.encode()) == {"s": "\U0001f600 é"}


@pytest.mark.parametrize(
    ("schema", "body", "fragment"),
    [
        (VDISK_REQUEST, {"name": "v", "container": "c", "size": 1, "z": 1}, "unknown field 'z'"),
        (VDISK_REQUEST, {"name": "v", "container": "c"}, "needs 'size'"),
        (VDISK_REQUEST, {"name": "v", "container": "c", "size": True}, "size must be an integer"),
        (VDISK_REQUEST, {"name": "v", "container": "c", "size": 1.0}, "size must be an integer"),
        (VDISK_REQUEST, {"name": "v", "container": "c", "size": -1}, "size must be"),
        (VDISK_REQUEST, {"name": "v", "container": "c", "size": 2**63 - 1}, "size must be"),
        (VDISK_REQUEST, {"name": "v\n", "container": "c", "size": 1}, "name must be a vdisk name"),
        (VDISK_REQUEST, {"name": "v", "container": 7, "size": 1}, "container must be"),
        (CONTAINER_REQUEST, {"name": "c", "rf": 4}, "rf must be an integer in 1..3"),
        (CONTAINER_REQUEST, {"name": "c", "dedup": 1}, "dedup must be true or false"),
        (CONTAINER_REQUEST, {"name": "c", "min_saving_ratio": 1}, "(1 excluded)"),
        (CONTAINER_REQUEST, {"name": "c", "ec_delay_s": 1e300}, "ec_delay_s must be"),
        (IMAGE_REQUEST, {"name": "i", "source_url": "file:///etc/passwd"}, "http(s) URL"),
        (IMAGE_REQUEST, {"name": "i", "checksum": {"type": "md5", "value": "0"}}, "checksum"),
        (IMAGE_REQUEST, {"name": "bad name!"}, "image name"),
        (IMAGE_REQUEST, {"name": "i", "owner": "x"}, "unknown field 'owner'"),
        (MEMBER_REQUEST, {"id": "n9", "port": 70000}, "port must be an integer in 1..65535"),
        (MEMBER_REQUEST, {"id": "n9", "port": 1, "labels": {"zone": "a"}}, "'labels.zone'"),
        (MEMBER_REQUEST, {"id": "n9", "port": 1, "disks": ["a", 3]}, "disks[1] must be"),
        (MEMBER_REQUEST, {"id": "n9", "port": 1, "disks": []}, "disks must be"),
        (SCRUB_REQUEST, {"cycle_s": 0.5}, "cycle_s must be a finite number in 1.."),
        (SCRUB_REQUEST, {"now": "yes"}, "now must be"),
    ],
)
def test_bodies_off_their_schema_are_refused_naming_the_field(
    schema: dict[str, Any], body: Any, fragment: str
) -> None:
    with pytest.raises(BadRequest) as err:
        check(schema, body)
    assert fragment in err.value.message, err.value.message


def test_bodies_on_their_schema_pass() -> None:
    check(VDISK_REQUEST, {"name": "v", "container": "c", "size": limits.MAX_VDISK_BYTES})
    check(IMAGE_REQUEST, {"name": "i", "checksum": "sha1:" + "ab" * 20, "container": None})
    check(IMAGE_REQUEST, {"name": "i", "checksum": {"type": "sha256", "value": "0" * 64}})
    check(CONTAINER_REQUEST, {"name": "c", "ec": "4+2", "min_saving_ratio": 0.5})
    check(MEMBER_REQUEST, {"id": "n9", "port": 1, "labels": {"rack": "r1"}, "disks": ["d"]})


def test_query_parameters_are_converted_and_checked() -> None:
    schema = integer(0, 10)
    assert from_query("limit", schema, "7") == 7
    for raw, fragment in [("x", "integer"), ("1.0", "integer"), ("11", "0..10"), ("9" * 40, "")]:
        with pytest.raises(BadRequest) as err:
            from_query("limit", schema, raw)
        assert "limit must be" in err.value.message and fragment in err.value.message


def test_every_route_is_in_the_document_and_nothing_else() -> None:
    sim = started(1)
    try:
        app = build_app(sim.nodes["n1"], api_routes())
    finally:
        sim.close()
    served = {
        (route.method, route_path(route.resource.canonical))
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    doc = document()
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/api/v1/openapi.json"]["get"]["security"] == []
    for op in OPERATIONS:
        item = doc["paths"][op.path][op.method.lower()]
        assert "400" in item["responses"] and "500" not in item["responses"]
        if op.body is not None:
            assert item["requestBody"]["content"]["application/json"]["schema"] is op.body
    assert isinstance(app, web.Application)
