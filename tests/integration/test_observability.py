"""Every node exports Prometheus metrics by the naming conventions, and an OpenAPI
document; the shipped Grafana dashboard asks only for series the nodes export."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric.config import load_config
from shell.client import FabricClient
from tests.integration.conftest import Cluster, write_config
from tests.metric_conventions import LABELS, series_names, violations

DASHBOARD = Path(__file__).parents[2] / "configs" / "grafana-dashboard.json"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("observed")
    cluster = Cluster(root / "data", write_config(root / "cluster.toml", 3))
    try:
        cluster.fabric("up", "--config", str(cluster.config))
        cluster.fabric("container", "create", "c", "--rf", "2", "--compression", "zstd")
        yield cluster
    finally:
        cluster.fabric("down", check=False)


@pytest.fixture(scope="module")
def scrapes(cluster: Cluster) -> dict[str, str]:
    """Each node's whole ``/metrics`` once it has applied the container (a follower may
    be a moment behind)."""
    urls = [n.url for n in load_config(str(cluster.dir / "cluster.toml")).nodes]

    async def scrape(url: str) -> str:
        async with FabricClient([url], token=cluster.token) as client:
            deadline = time.monotonic() + 10
            while True:
                async with client.session.get(url + "/metrics") as resp:
                    assert resp.status == 200
                    text = await resp.text()
                if 'container="c"' in text or time.monotonic() > deadline:
                    return text
                await asyncio.sleep(0.1)

    async def go() -> list[str]:
        return list(await asyncio.gather(*(scrape(url) for url in urls)))

    return dict(zip(urls, asyncio.run(go()), strict=True))


def test_metrics_and_openapi_on_every_node(cluster: Cluster, scrapes: dict[str, str]) -> None:
    async def go() -> None:
        for url, text in scrapes.items():
            assert 'fabric_container_physical_bytes{container="c"} 0.0' in text
            assert "fabric_raft_term{node=" in text
            assert 'fabric_node_up{node="n1"} 1.0' in text
            assert 'fabric_container_reduced_resiliency_bytes{container="c"} 0.0' in text
            assert 'fabric_disk_state{disk="disk0",node=' in text
            assert 'fabric_storage_written_bytes_total{disk="disk1",node=' in text
            assert "fabric_scrub_bytes_total{node=" in text
            assert "fabric_rebuild_copied_bytes_total{node=" in text
            # A healthy cluster's own traffic passes every check on the wire.
            for reason in ("invalid", "bad_field", "envelope"):
                assert f'reason="{reason}"}} 0.0' in text
            async with FabricClient([url], token=cluster.token) as client:
                # name[] narrows the answer to the series named (what the sampler asks).
                narrow = await client.metrics_text(["fabric_scrub_bytes_total"])
                assert narrow.startswith("# HELP fabric_scrub_bytes_total ")
                assert "fabric_scrub_bytes_total{node=" in narrow
                assert "fabric_node_up" not in narrow and "fabric_raft_term" not in narrow
                spec = await client.request("GET", "/api/v1/openapi.json")
                assert spec["openapi"].startswith("3.")
                assert "/api/v1/vdisks/{id}/data" in spec["paths"]
                paths = set(spec["paths"])
                assert {"/api/v1/events", "/api/v1/rebuild", "/api/v1/scrub"} <= paths

    asyncio.run(go())


def test_every_family_follows_the_prometheus_naming_conventions(
    scrapes: dict[str, str],
) -> None:
    """Parsed with prometheus_client's own parser, as Prometheus would read it: the
    leader's scrape holds its leader-only families too."""
    for url, text in scrapes.items():
        assert violations(text) == [], url


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    variables = dashboard["templating"]["list"]
    return exprs + [v["definition"] for v in variables if v["type"] == "query"]


def test_the_dashboard_asks_only_for_series_the_nodes_export(scrapes: dict[str, str]) -> None:
    exported = set().union(*(series_names(text) for text in scrapes.values()))
    queries = dashboard_queries()
    assert len(queries) > 30
    used = {name for q in queries for name in re.findall(r"\bfabric_[a-z0-9_]+", q)}
    assert used - exported == set(), "the dashboard asks for series no node exports"
    # Labels it groups or filters by: the nodes' own, or those Prometheus adds.
    grouped = {
        label.strip()
        for q in queries
        for group in re.findall(r"\bby \(([^)]*)\)", q)
        for label in group.split(",")
    }
    assert grouped - LABELS == set()
    filtered = set(re.findall(r"[{,]\s*([a-z_]+)\s*=~?", " ".join(queries)))
    assert filtered <= LABELS | {"job", "instance"}
