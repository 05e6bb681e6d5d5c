"""Files of a cluster are its owner's alone, and a node will not run on files that are not."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from nodes import secretfile
from tests.security.conftest import Cluster


def test_every_file_and_directory_of_a_cluster_is_private(cluster: Cluster) -> None:
    cluster.fabric("container", "create", "files", "--rf", "2")
    cluster.fabric("kv", "put", "k", "1")  # the WAL and the state have something to say
    top = {p.name: stat.S_IMODE(p.stat().st_mode) for p in cluster.dir.iterdir()}
    assert top["cluster.secret"] == top["admin.token"] == top["cluster.toml"] == 0o600, top
    assert stat.S_IMODE(cluster.dir.stat().st_mode) == 0o700
    open_to_others = [
        f"{p} {stat.S_IMODE(p.stat().st_mode):04o}"
        for p in [cluster.dir, *cluster.dir.rglob("*")]
        if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    ]
    assert not open_to_others, open_to_others
    kinds = {p.suffix or p.name for p in cluster.dir.rglob("*") if p.is_file()}
    assert {".log", "pid", ".toml"} <= kinds, kinds  # the walk saw the files that matter


def run_node(config: Path, node_dir: Path, secret: Path) -> subprocess.CompletedProcess[str]:
    args = ["--config", str(config), "--id", "n1", "--dir", str(node_dir), "--secret", str(secret)]
    return subprocess.run(
        [sys.executable, "-m", "shell.cli", "node", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_node_refuses_a_secret_others_can_read_or_a_directory_others_can_write(
    cluster: Cluster, tmp_path: Path
) -> None:
    secret = tmp_path / "cluster.secret"
    assert secretfile.create(str(secret))
    os.chmod(secret, 0o644)
    out = run_node(cluster.config, tmp_path / "n1", secret)
    assert out.returncode == 2 and "open to other users" in out.stderr, out.stderr

    os.chmod(secret, 0o600)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    out = run_node(cluster.config, shared, secret)
    assert out.returncode == 2 and "can be written by other users" in out.stderr, out.stderr

    out = run_node(cluster.config, tmp_path / "n1", tmp_path / "missing.secret")
    assert out.returncode == 2 and "no cluster secret" in out.stderr, out.stderr


def test_the_secret_and_the_admin_token_never_leave_the_cluster_directory(
    cluster: Cluster,
) -> None:
    """Not in an API answer, not in a log, not in the event log."""
    from tests.security.conftest import call, urls

    secret = (cluster.dir / "cluster.secret").read_text().strip()
    admin = cluster.token
    cluster.fabric("token", "create", "leak check", "--role", "operator")
    answers = [
        call(urls(cluster)[0] + path, token=admin)[1]
        for path in ("/api/v1/cluster", "/api/v1/health", "/api/v1/tokens", "/api/v1/events")
    ]
    seen = [str(a) for a in answers] + [p.read_text() for p in cluster.dir.rglob("*.log")]
    seen.append(cluster.fabric("events", "--json").stdout)
    for text in seen:
        assert secret not in text and admin not in text
        assert admin.split("_", 2)[2] not in text  # not even the token's secret part
    assert any("leak check" in text for text in seen), "the events were read"
