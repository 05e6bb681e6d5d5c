"""Stories about a real local cluster: processes, sockets, files, kill -9."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Cluster


def _leader_pid(view: dict[str, object]) -> int:
    nodes = view["nodes"]
    assert isinstance(nodes, list)
    return next(int(n["pid"]) for n in nodes if n["id"] == view["leader"])


def test_kill_leader_new_leader_keeps_committed_data(
    make_cluster: Callable[[int], Cluster],
) -> None:
    cluster = make_cluster(3)
    cluster.fabric("up", "--config", str(cluster.config))
    view = cluster.status()
    assert view["leader"] is not None
    assert {n["state"] for n in view["nodes"]} == {"UP"}
    assert all(n["pid"] and n["dir"] for n in view["nodes"])

    cluster.fabric("kv", "put", "owner", '{"team": "storage"}')
    old_leader = view["leader"]
    os.kill(_leader_pid(view), signal.SIGKILL)

    after = cluster.wait(lambda v: v["leader"] not in (None, old_leader), what="a new leader")
    assert after["leader"] != old_leader
    got = json.loads(cluster.fabric("kv", "get", "owner", "--json").stdout)
    assert got["value"] == {"team": "storage"}
    # The new leader commits new changes too, with one of three voters gone.
    cluster.fabric("kv", "put", "after-failover", "1")
    assert cluster.fabric("kv", "get", "after-failover").stdout.strip() == "1"
    dead = next(n for n in after["nodes"] if n["id"] == old_leader)
    assert dead["state"] == "DOWN" and dead["pid"] is None


def test_down_then_up_restarts_the_same_cluster_with_its_metadata(
    make_cluster: Callable[[int], Cluster],
) -> None:
    cluster = make_cluster(3)
    cluster.fabric("up", "--config", str(cluster.config))
    for i in range(20):
        cluster.fabric("kv", "put", f"k{i}", str(i))
    down = cluster.fabric("down")
    assert down.stdout.count("stopped") == 3
    assert {n["state"] for n in cluster.status()["nodes"]} == {"DOWN"}

    cluster.fabric("up")  # no --config: the directory's own cluster.toml
    assert [cluster.fabric("kv", "get", f"k{i}").stdout.strip() for i in range(20)] == [
        str(i) for i in range(20)
    ]


def test_port_in_use_names_the_node_and_its_log(make_cluster: Callable[[int], Cluster]) -> None:
    cluster = make_cluster(3)
    # A made cluster whose ports others took since (a new one would be refused at once,
    # test_cli_usage).
    cluster.fabric("init", "--config", str(cluster.config))
    ports = cluster.config.read_text().split("port = ")
    with socket.socket() as squatter, socket.socket() as squatter2:
        squatter.bind(("127.0.0.1", int(ports[2].split()[0])))  # n2's port
        squatter.listen()
        squatter2.bind(("127.0.0.1", int(ports[3].split()[0])))  # n3's: no quorum is left
        squatter2.listen()
        out = cluster.fabric("up", check=False)
    assert out.returncode == 1
    assert "node n2 failed to start: its address is already in use" in out.stderr
    assert str(cluster.dir / "nodes" / "n2" / "node.log") in out.stderr
    assert "only 1 of 3 voters could start" in out.stderr
    # Nothing is left running after a start that cannot elect a leader.
    assert all(n["pid"] is None for n in cluster.status()["nodes"])


def test_corrupt_raft_log_refuses_to_start_and_peers_rebuild_it(
    make_cluster: Callable[[int], Cluster],
) -> None:
    cluster = make_cluster(3)
    cluster.fabric("up", "--config", str(cluster.config))
    cluster.fabric("kv", "put", "precious", '"data"')
    cluster.fabric("down")

    wal = cluster.dir / "nodes" / "n2" / "disk0" / "raft.wal"
    data = bytearray(wal.read_bytes())
    data[30] ^= 0xFF
    wal.write_bytes(bytes(data))
    out = cluster.fabric("up", check=False)
    assert out.returncode == 6  # n1 and n3 run without it
    assert "node n2 failed to start: its durable state is corrupt" in out.stderr
    assert "checksum mismatch" in out.stderr

    # The operator moves the bad node's state aside; it comes back from its peers.
    (cluster.dir / "nodes" / "n2").rename(cluster.dir / "n2.corrupt")
    cluster.fabric("up")
    assert cluster.fabric("kv", "get", "precious").stdout.strip() == '"data"'


def test_unknown_node_id_and_malformed_config_are_clear(
    make_cluster: Callable[[int], Cluster],
) -> None:
    cluster = make_cluster(3)
    out = cluster.fabric("node", "run", "--config", str(cluster.config), "--id", "n9", check=False)
    assert out.returncode == 2
    assert "unknown node id 'n9'" in out.stderr

    bad = cluster.config.parent / "bad.toml"
    bad.write_text(cluster.config.read_text().replace("tick_ms = 50", "tick_ms = fast"))
    out = cluster.fabric("up", "--config", str(bad), check=False)
    assert out.returncode != 0
    assert "bad.toml" in out.stderr and "not valid TOML" in out.stderr


def test_a_second_cluster_on_the_same_ports_is_never_confused_with_the_first(
    make_cluster: Callable[[int], Cluster], tmp_path: Path
) -> None:
    first = make_cluster(3)
    first.fabric("up", "--config", str(first.config))
    first.fabric("kv", "put", "owner", '"first"')

    second = Cluster(tmp_path / "second", first.config)  # same ports, another directory
    out = second.fabric("up", "--config", str(first.config), check=False)
    assert out.returncode == 1
    assert "already in use" in out.stderr and "--port-base" in out.stderr
    assert not second.dir.exists(), "a refused up leaves nothing behind"
    # Made anyway (`init` checks no port: its nodes may run on other hosts), it fails too.
    second.fabric("init", "--config", str(first.config))
    out = second.fabric("up", check=False)
    assert out.returncode == 1 and "already in use" in out.stderr
    # Its commands reach the first cluster's ports, which refuse them.
    got = second.fabric("kv", "get", "owner", check=False)
    assert got.returncode == 1 and "another cluster is using these ports" in got.stderr
    assert first.fabric("kv", "get", "owner").stdout.strip() == '"first"'
