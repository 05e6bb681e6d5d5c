"""Every node exports Prometheus metrics and an OpenAPI document."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fabric.config import load_config
from shell.client import FabricClient
from tests.integration.conftest import Cluster


def test_metrics_and_openapi_on_every_node(make_cluster: Callable[[int], Cluster]) -> None:
    cluster = make_cluster(3)
    cluster.fabric("up", "--config", str(cluster.config))
    cluster.fabric("container", "create", "c", "--rf", "2", "--compression", "zstd")
    urls = [n.url for n in load_config(str(cluster.dir / "cluster.toml")).nodes]

    async def scrape(client: FabricClient, url: str) -> str:
        # Metrics show the node's own applied state: a follower may be a moment behind.
        deadline = time.monotonic() + 10
        while True:
            async with client.session.get(url + "/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            if 'container="c"' in text or time.monotonic() > deadline:
                return text
            await asyncio.sleep(0.1)

    async def go() -> None:
        for url in urls:
            async with FabricClient([url], token=cluster.token) as client:
                text = await scrape(client, url)
                assert 'fabric_container_physical_bytes{container="c"} 0.0' in text
                assert "fabric_raft_term{node=" in text
                assert "fabric_node_up{peer=" in text
                assert 'fabric_container_reduced_resiliency_bytes{container="c"} 0.0' in text
                assert 'fabric_disk_state{disk="disk0",node=' in text
                assert "fabric_scrub_bytes_total{node=" in text
                assert "fabric_rebuild_copied_bytes_total{node=" in text
                # A healthy cluster's own traffic passes every check on the wire.
                for reason in ("invalid", "bad_field", "envelope"):
                    assert f'reason="{reason}"}} 0.0' in text
                # name[] narrows the answer to the series named (what the sampler asks).
                narrow = await client.metrics_text(["fabric_scrub_bytes_total"])
                assert narrow.startswith("# HELP fabric_scrub_bytes_total ")
                assert "fabric_scrub_bytes_total{node=" in narrow
                assert "fabric_node_up" not in narrow and "fabric_raft_term" not in narrow
                spec = await client.request("GET", "/api/v1/openapi.json")
                assert spec["openapi"].startswith("3.")
                assert "/api/v1/vdisks/{id}/data" in spec["paths"]
                assert {"/api/v1/events", "/api/v1/rebuild", "/api/v1/scrub"} <= set(spec["paths"])

    asyncio.run(go())
