"""A cluster directory written by release 0.1 starts on this release and keeps every byte.

The fixture (``tests/fixtures/cluster-0.1.tar.gz``, see its README) holds a Raft log of
untyped records and raw catalog writes. This release replays it into typed records,
serves the same bytes, takes new writes, and restarts again from the mixed log.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path

from tests.integration.conftest import Cluster, free_ports

FIXTURES = Path(__file__).parent.parent / "fixtures"
VM1_SHA256 = "930b03ffd3c410b5cfa8094b37aa1880c70f7dc9ac2c91d22d215893dba7b1e8"
VM2_SHA256 = "56543e6c9e2ec9a80379e67bf9d85daefd6d81b1ae88d05fcc7ba3e0719175dc"
TINY_SHA256 = "ba911d767a4be75a3287c664ff7047e8465ff8419b35eef681d0fceb1dc7f95a"


def unpack_release_cluster(root: Path) -> Cluster:
    with tarfile.open(FIXTURES / "cluster-0.1.tar.gz") as tar:
        tar.extractall(root, filter="data")
    config = root / "c" / "cluster.toml"
    ports = iter(free_ports(3))
    text = re.sub(r"port = 739\d", lambda _: f"port = {next(ports)}", config.read_text())
    config.write_text(text)
    return Cluster(root / "c", config)


def read_sha256(cluster: Cluster, tmp: Path, *args: str) -> str:
    target = tmp / "out.bin"
    cluster.fabric(*args, "-o", str(target), timeout=60)
    return hashlib.sha256(target.read_bytes()).hexdigest()


def test_a_release_0_1_cluster_starts_and_keeps_its_data(tmp_path: Path) -> None:
    cluster = unpack_release_cluster(tmp_path)
    try:
        cluster.fabric("up", timeout=120)
        assert json.loads(cluster.fabric("kv", "get", "owner", "--json").stdout)["value"] == (
            "storage-team"
        )
        assert read_sha256(cluster, tmp_path, "vdisk", "read", "vm1") == VM1_SHA256
        assert read_sha256(cluster, tmp_path, "vdisk", "read", "vm2") == VM2_SHA256
        assert read_sha256(cluster, tmp_path, "image", "download", "tiny") == TINY_SHA256
        images = json.loads(cluster.fabric("image", "list", "--json").stdout)
        assert [(i["name"], i["state"], i["source_format"]) for i in images] == [
            ("tiny", "ACTIVE", "qcow2")
        ]
        containers = {c["name"]: c for c in cluster.status()["containers"]}
        assert set(containers) == {"gold", "ec", "images"}
        assert containers["gold"]["logical_bytes"] == 14 * 65536  # two of 16 are holes
        # The upgraded cluster takes new writes, and restarts from the mixed log.
        new = tmp_path / "new.bin"
        new.write_bytes(b"written by the new release\n" * 5000)
        cluster.fabric("vdisk", "write", "vm1", str(new), "--offset", str(5 * 65536))
        cluster.fabric("kv", "put", "owner", '"new-team"')
        cluster.fabric("down")
        cluster.fabric("up", timeout=120)
        assert json.loads(cluster.fabric("kv", "get", "owner", "--json").stdout)["value"] == (
            "new-team"
        )
        assert read_sha256(cluster, tmp_path, "image", "download", "tiny") == TINY_SHA256
        cluster.fabric("vdisk", "read", "vm1", "-o", str(tmp_path / "vm1.bin"))
        got = (tmp_path / "vm1.bin").read_bytes()
        assert got[5 * 65536 : 5 * 65536 + len(new.read_bytes())] == new.read_bytes()
    finally:
        cluster.fabric("down", check=False)
