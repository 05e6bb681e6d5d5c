"""A client sends the JSON that used to get past the API (issue 11): a chunked body far
over the limit, nesting a thousand deep, integers of thousands of digits or past 2^64,
lone surrogates, NaN, booleans for numbers, fields nobody declared. Each is refused
with a 4xx naming the problem, and nothing it asked for exists afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from fabric import limits
from fabric.config import load_config
from tests.integration.conftest import Cluster


@pytest.fixture
def live(make_cluster: Callable[[int], Cluster]) -> Cluster:
    cluster = make_cluster(1)
    cluster.fabric("up", "--config", str(cluster.config))
    cluster.fabric("container", "create", "c", "--rf", "1")
    return cluster


@pytest.fixture
def api_headers(live: Cluster) -> dict[str, str]:
    """Headers every request of this file carries: the cluster's admin token."""
    return {"Authorization": f"Bearer {live.token}"}


class Api:
    """The one way this file talks to the node."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers.update(headers)

    def send(
        self, method: str, path: str, body: bytes | Iterator[bytes] | None = None
    ) -> tuple[int, Any]:
        resp = self.session.request(
            method,
            self.base + path,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        return resp.status_code, resp.json() if resp.content else None


def test_hostile_json_is_refused_and_changes_nothing(
    live: Cluster, api_headers: dict[str, str]
) -> None:
    api = Api(load_config(str(live.dir / "cluster.toml")).nodes[0].url, api_headers)

    def chunked(total: int) -> Iterator[bytes]:
        yield b'{"value": "'
        piece = b"a" * (64 * 1024)
        for _ in range(total // len(piece)):
            yield piece
        yield b'"}'

    deep = "[" * 1000 + "]" * 1000
    cases: list[tuple[str, str, bytes | Iterator[bytes], int, str]] = [
        # requests sends a generator with Transfer-Encoding: chunked, no Content-Length.
        ("PUT", "/api/v1/kv/big", chunked(8 * limits.MAX_JSON_BODY_BYTES), 413, "larger than"),
        ("PUT", "/api/v1/kv/deep", f'{{"value": {deep}}}'.encode(), 400, "nested deeper"),
        ("PUT", "/api/v1/kv/digits", b'{"value": ' + b"9" * 5000 + b"}", 400, "out of range"),
        ("PUT", "/api/v1/kv/u64", b'{"value": 18446744073709551616}', 400, "out of range"),
        ("PUT", "/api/v1/kv/surrogate", b'{"value": "\\ud800"}', 400, "lone surrogate"),
        ("PUT", "/api/v1/kv/nan", b'{"value": NaN}', 400, "NaN"),
        ("PUT", "/api/v1/kv/extra", b'{"value": 1, "ttl": 5}', 400, "unknown field 'ttl'"),
    ]
    vdisk = {"name": "v", "container": "c", "size": 1 << 20}
    for field, value, fragment in [
        ("size", True, "size must be an integer"),
        ("size", 1.5, "size must be an integer"),
        ("size", -1, "size must be an integer in 1.."),
        ("size", 2**63 - 1, "size must be an integer in 1.."),
        ("owner", "x", "unknown field 'owner'"),
    ]:
        cases.append(
            ("POST", "/api/v1/vdisks", json.dumps({**vdisk, field: value}).encode(), 400, fragment)
        )
    cases += [
        (
            "POST",
            "/api/v1/vdisks",
            b'{"name": "v", "container": "c", "size": Infinity}',
            400,
            "finite",
        ),
        ("POST", "/api/v1/images", b'{"name": "i", "visibility": "public"}', 400, "unknown field"),
        ("PUT", "/api/v1/rebuild", b'{"per_node": 1e400}', 400, "finite"),
        ("PUT", "/api/v1/scrub", b'{"bytes_per_s": false}', 400, "bytes_per_s must be"),
    ]
    for method, path, body, status, fragment in cases:
        got, answer = api.send(method, path, body)
        assert got == status, (path, answer)
        assert answer["error"]["code"] in ("bad_request", "too_large")
        assert fragment in answer["error"]["message"], answer

    for key in ("big", "deep", "digits", "u64", "surrogate", "nan", "extra"):
        assert api.send("GET", f"/api/v1/kv/{key}")[0] == 404
    assert api.send("GET", "/api/v1/vdisks")[1] == []
    assert api.send("GET", "/api/v1/images")[1] == []
    status, answer = api.send("GET", "/api/v1/health")
    assert status == 200 and answer["problems"] == []
    log = (live.dir / "nodes" / "n1" / "node.log").read_text()
    assert "internal error serving" not in log
