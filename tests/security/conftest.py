"""One real cluster per module, attacked from outside the way issue 11's Why list did:
with curl-like requests on loopback and nothing else."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fabric.config import load_config
from tests.integration.conftest import Cluster, make_cluster, running_cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "security" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path_factory, "secure")


def urls(cluster: Cluster) -> list[str]:
    return [n.url for n in load_config(str(cluster.dir / "cluster.toml")).nodes]


def call(
    url: str,
    method: str = "GET",
    body: Any = None,
    token: str = "",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, Any]:
    """One HTTP request as curl would send it: (status, JSON answer or raw bytes)."""
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


__all__ = ["Cluster", "Path", "call", "make_cluster", "urls"]
