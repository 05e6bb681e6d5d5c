"""The pieces the shipped scenarios added to ``fabric run``: the flaky import source, the
image check, what the summary observed, and the settings a scenario passes to its
cluster."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from fabric.history import Op
from fabric.scenario import parse_scenario
from fabric.timeline import FaultBand
from shell.client import FabricClient, Unreachable
from shell.experiment import flaky, report
from shell.experiment.runner import cluster_config
from shell.experiment.sampler import repair_counts
from shell.experiment.verdicts import check_images
from shell.experiment.workloads import digest, disk_digest


async def _fetch_resuming(base: str, name: str) -> tuple[bytes, int]:
    """What a node's import does: GET, and after a short body GET again from there."""
    got, drops = b"", 0
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            headers = {"Range": f"bytes={len(got)}-"} if got else {}
            async with session.get(f"{base}/flaky/{name}?drop=0.5", headers=headers) as r:
                assert r.status == (206 if got else 200)
                try:
                    async for chunk in r.content.iter_any():
                        got += chunk
                    return got, drops
                except aiohttp.ClientPayloadError:
                    drops += 1
    raise AssertionError("never finished")


async def test_the_flaky_source_breaks_bodies_and_serves_the_rest_by_range(
    tmp_path: Path,
) -> None:
    data = random.Random(1).randbytes(1 << 20)
    (tmp_path / "img.raw").write_bytes(data)
    app = web.Application()
    stats: dict[str, int] = {}
    app.router.add_get("/flaky/{name}", flaky.handler(str(tmp_path), random.Random(7), stats))
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("")).rstrip("/")
        got, drops = await _fetch_resuming(base, "img.raw")
        assert drops > 0, "at drop=0.5 some response breaks off"
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert stats == {"responses": drops + 1, "broken": drops, "resumed": drops}
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/flaky/..secret") as r:
                assert r.status == 404
            async with session.get(
                f"{base}/flaky/img.raw", headers={"Range": f"bytes={len(data)}-"}
            ) as r:
                assert r.status == 416


def _op(kind: str, key: str, value: str | None, extra: dict[str, str] | None = None) -> Op:
    return Op(1, kind, key, value, 0.0, 1.0, "ok", "", extra or {})


def test_the_image_check_compares_what_arrived_with_what_was_sent() -> None:
    good = [
        _op("import", "a", "h1", {"sha256_reported": "h1"}),
        _op("download", "a", "h1"),
        _op("upload", "b", "h2"),
        _op("download", "b", "h2"),
    ]
    verdict = check_images(good)
    assert verdict.status == "pass" and verdict.stats["checked"] == 3
    hashed_wrong = [_op("import", "a", "h1", {"sha256_reported": "hX"})]
    assert check_images(hashed_wrong).status == "fail"
    read_wrong = [*good, _op("download", "b", "hX")]
    bad = check_images(read_wrong)
    assert bad.status == "fail" and bad.culprit == read_wrong[-1]


def test_a_download_is_checked_against_the_disk_the_source_became() -> None:
    """A raw source of 1000 bytes is stored as 1024 (a whole sector): the download's hash
    is the padded disk's, the import's reported hash the source's."""
    source = b"\x07" * 1000
    disk = disk_digest(source)
    assert disk == hashlib.sha256(source + bytes(24)).hexdigest() != digest(source)
    extra = {"sha256_reported": digest(source), "disk_sha256": disk}
    ops = [_op("import", "a", digest(source), extra), _op("download", "a", disk)]
    assert check_images(ops).status == "pass"
    assert check_images([ops[0], _op("download", "a", digest(source))]).status == "fail"


def test_observed_leaders_states_events_and_latency_by_phase() -> None:
    def view(leader: str, n2: str) -> dict[str, object]:
        return {
            "view": {
                "leader": leader,
                "nodes": [{"id": "n1", "state": "UP"}, {"id": "n2", "state": n2}],
            }
        }

    raw = [view("n1", "UP"), view("n1", "DOWN"), {"ok": False}, view("n2", "UP")]
    raw[1]["repairs"] = {"read": 2, "scrub": 1}
    raw[3]["repairs"] = {"read": 1, "scrub": 1}  # a node restarted: its count began again
    ops = [
        Op(1, "write", "k", "v", 0.0, 0.01, "ok"),
        Op(1, "write", "k", "v", 5.0, 5.5, "ok"),
        Op(1, "write", "k", "v", 9.0, 9.02, "ok"),
        Op(1, "write", "k", "v", 9.0, 9.9, "unknown"),
    ]
    o = report.observed(
        ops,
        raw,
        [{"kind": "fault"}, {"kind": "fault"}, {"x": 1}],
        [FaultBand(4.0, 6.0, "disk-slow")],
    )
    assert o["leaders"] == ["n1", "n2"]
    assert o["node_states"] == {"n1": ["UP"], "n2": ["UP", "DOWN"]}
    assert o["events_by_kind"] == {"fault": 2}
    assert o["repairs"] == {"read": 2, "scrub": 1}
    phases = o["latency_by_phase"]
    assert [phases[p]["ops"] for p in ("before", "during", "after")] == [1, 1, 1]
    assert phases["during"]["p90_ms"] == phases["during"]["p99_ms"] == 500.0
    assert "leaders seen, in order: n1, n2" in "\n".join(report._observed_lines(o))


def test_repairs_are_read_from_every_node_s_counters() -> None:
    text = (
        "# HELP fabric_replica_repairs_total Bad extent copies\n"
        'fabric_replica_repairs_total{node="n1"} 2.0\n'
        'fabric_scrub_repaired_total{node="n1"} 1.0\n'
        'fabric_degraded_reads_total{node="n1"} 9.0\n'
    )
    other = 'fabric_replica_repairs_total{node="n2"} 3.0\n'
    assert repair_counts({"n1": text, "n2": other, "n3": ""}) == {"read": 5, "scrub": 1}


def test_the_cluster_gets_the_scenario_s_scrub_settings() -> None:
    s = parse_scenario(
        "duration_s = 9\n[cluster]\nnodes = 3\nscrub_cycle_s = 5\nscrub_bytes_per_s = 0\n"
        '[[workloads]]\nkind = "kv-cas"\n'
    )
    cfg = cluster_config(s)
    assert (cfg.scrub.cycle_s, cfg.scrub.bytes_per_s) == (5, 0)
    plain = cluster_config(parse_scenario('duration_s = 9\n[[workloads]]\nkind = "kv-cas"\n'))
    assert plain.scrub.cycle_s > 3600


async def test_a_put_whose_connection_broke_is_in_doubt_and_never_sent_again() -> None:
    """A node that applied a PUT and died before answering: aiohttp would send the PUT
    again on its own (idempotent method, pooled connection) and, refused by the dead
    node, make it look never sent; a kv history then shows a write that took effect as
    failed. FabricClient sends it once and calls its outcome unknown."""
    puts = 0

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def put(request: web.Request) -> web.Response:
        nonlocal puts
        puts += 1
        await request.read()
        assert request.transport is not None
        request.transport.close()  # applied, then gone before the answer
        return web.json_response({"version": 1})

    app = web.Application()
    app.router.add_get("/api/v1/health", health)
    app.router.add_put("/api/v1/kv/{key}", put)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        async with FabricClient([url], 5.0) as client:
            await client.request("GET", "/api/v1/health")  # a pooled connection to reuse
            with pytest.raises(Unreachable) as caught:
                await client.kv_put("k", 1)
    assert puts == 1
    assert caught.value.maybe_sent
