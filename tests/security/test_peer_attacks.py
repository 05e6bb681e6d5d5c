"""Issue 11's attacks on the node-to-node endpoints, replayed against a real cluster.

Before: a request naming a node in ``X-Fabric-From`` with the cluster id (published by
``/api/v1/health``) was trusted. Each attack below now gets 401 before its body is
read, and the cluster is as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

from fabric.consensus.types import AppendRequest, Snapshot, SnapshotRequest
from fabric.metadata.commands import Put
from fabric.wire.codec import encode, encode_parts
from fabric.wire.messages import AppendExtents, ProposeRequest, RepairExtent
from tests.security.conftest import Cluster, call, urls


def public_headers(cluster: Cluster, url: str) -> dict[str, str]:
    """All an attacker had to know: a node's name and the public cluster id."""
    status, health = call(url + "/api/v1/health", token=cluster.token)
    assert status == 200
    return {"X-Fabric-From": "n2", "X-Fabric-Cluster": health["cluster_id"]}


def internal(url: str, headers: dict[str, str], message: object) -> tuple[int, object]:
    header, parts = encode_parts(message)
    if parts:
        headers = {**headers, "X-Fabric-Parts": ",".join(map(str, (len(header), *map(len, parts))))}
    return call(url + "/internal/v1/call", "POST", headers=headers, data=header + b"".join(parts))


def egroup_files(cluster: Cluster) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (cluster.dir / "nodes").rglob("*.eg")}


def test_forged_metadata_proposals_heartbeats_and_snapshots_are_refused(cluster: Cluster) -> None:
    leader_url = urls(cluster)[0]
    headers = public_headers(cluster, leader_url)
    term_before = call(leader_url + "/api/v1/health", token=cluster.token)[1]["term"]
    junk = ProposeRequest(encode(Put("kv/pwned", "yes")))
    assert internal(leader_url, headers, junk)[0] == 401
    heartbeat = AppendRequest(term_before + 1000, "n2", "n1", 0, 0, (), 0)
    body = encode([heartbeat])
    status, _ = call(leader_url + "/internal/v1/messages", "POST", headers=headers, data=body)
    assert status == 401
    snapshot = Snapshot(10**6, term_before + 1000, b"forged state")
    body = encode([SnapshotRequest(term_before + 1000, "n2", "n1", snapshot)])
    status, _ = call(leader_url + "/internal/v1/messages", "POST", headers=headers, data=body)
    assert status == 401

    for url in urls(cluster):
        status, _ = call(url + "/api/v1/kv/pwned", token=cluster.token)
        assert status == 404, "a forged proposal was committed"
        health = call(url + "/api/v1/health", token=cluster.token)[1]
        assert health["term"] < term_before + 1000, "a forged heartbeat moved the term"
    metrics = call(leader_url + "/metrics", token=cluster.token)[1]
    assert b"fabric_peer_requests_refused_total" in metrics


def test_forged_repairs_and_a_traversal_id_touch_no_file(cluster: Cluster) -> None:
    cluster.fabric("container", "create", "victims", "--rf", "2")
    cluster.fabric("vdisk", "create", "v", "--container", "victims", "--size", "8M")
    data = cluster.dir.parent / "data.bin"
    data.write_bytes(os.urandom(1 << 20))
    cluster.fabric("vdisk", "write", "v", str(data))
    before = egroup_files(cluster)
    assert before, "the story needs stored extent groups"
    url = urls(cluster)[1]
    headers = public_headers(cluster, url)
    for path in before:
        egid = path.stem
        assert internal(url, headers, RepairExtent(egid, 0, b"\0" * 4096))[0] == 401
    outside = cluster.dir.parent / "planted"
    traversal = AppendExtents("../../../../planted", (b"owned",), -1)
    assert internal(url, headers, traversal)[0] == 401
    assert not outside.exists() and not list(cluster.dir.parent.rglob("planted*"))
    assert egroup_files(cluster) == before
    back = cluster.dir.parent / "back.bin"
    cluster.fabric("vdisk", "read", "v", "-o", str(back), "--length", str(1 << 20))
    assert back.read_bytes() == data.read_bytes()
