"""The command line as a new user meets it, on a real two-node cluster: commands that
find it from any directory, readable results, a thin vdisk read back as a sparse file,
one clear line once it is stopped; and a second cluster beside the first."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shell import exits
from tests.integration.conftest import write_config

MiB = 1 << 20


def fabric(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``fabric ARGS`` run in ``cwd`` as a user runs it: no --dir unless given, no
    FABRIC_DIR (the state directory is the test's own: tests/conftest.py)."""
    env = {k: v for k, v in os.environ.items() if k != "FABRIC_DIR"}
    out = subprocess.run(
        [sys.executable, "-m", "shell.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"fabric {' '.join(args)} exited {out.returncode}:\n{out.stderr}")
    return out


@pytest.fixture
def stops(tmp_path: Path) -> Iterator[list[Path]]:
    """Cluster directories to stop at the end, whatever happened."""
    dirs: list[Path] = []
    yield dirs
    for d in dirs:
        if (d / "cluster.toml").exists():
            fabric(tmp_path, "down", "--dir", str(d), check=False)


def test_a_users_session_from_up_to_down(tmp_path: Path, stops: list[Path]) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    config = write_config(tmp_path / "two.toml", 2, voters=1)  # n2: a member, no vote
    stops.append(home / "c1")
    up = fabric(home, "up", "--config", str(config), "--dir", "c1")
    # `up` says where the console is, and that address serves its login page.
    console = re.search(r"console: (http://127\.0\.0\.1:\d+/) ", up.stdout)
    assert console, up.stdout
    with urllib.request.urlopen(console.group(1) + "login", timeout=10) as page:
        assert 'name="token"' in page.read().decode()

    # From another directory, without --dir: the cluster `up` started last.
    view = json.loads(fabric(elsewhere, "status", "--json").stdout)
    assert view["dir"] == str(home / "c1") and view["leader"] == "n1"
    # /api/v1/health and `fabric status` name a node's role with the same word.
    roles = {n["id"]: n["role"] for n in view["nodes"]}
    assert roles == {"n1": "leader", "n2": "member"}
    assert {n["id"]: health(view, n)["role"] for n in view["nodes"]} == roles

    # Global options before the subcommand; --json gives the full record.
    record = json.loads(fabric(elsewhere, "--json", "container", "create", "c", "--rf", "1").stdout)
    assert record["name"] == "c" and record["rf"] == 1
    made = fabric(elsewhere, "vdisk", "create", "vm1", "--container", "c", "--size", "256M")
    assert made.stdout == "created vdisk vm1 (256 MiB, container c)\n"

    data = random.Random(3).randbytes(3 * MiB)
    (tmp_path / "data.bin").write_bytes(data)
    wrote = fabric(
        elsewhere, "vdisk", "write", "vm1", str(tmp_path / "data.bin"), "--offset", "100M"
    )
    assert wrote.stdout == f"wrote 3.0 MiB to vdisk vm1 at offset {100 * MiB}\n"
    assert wrote.stderr == "", "no progress bar when standard error is not a terminal"

    shown = fabric(elsewhere, "vdisk", "show", "vm1").stdout
    assert re.search(r"^created\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$", shown, re.M), shown
    vdisk: dict[str, Any] = json.loads(fabric(elsewhere, "vdisk", "show", "vm1", "--json").stdout)
    assert vdisk["mapped_extents"] == 3, "the three 1 MiB extents that hold data"

    # A thin vdisk comes back as a sparse file: its holes take no room.
    out = tmp_path / "out.img"
    read = fabric(elsewhere, "vdisk", "read", "vm1", "-o", str(out))
    assert read.stderr == "" and read.stdout.startswith("read 256.0 MiB of vdisk vm1"), read
    st = out.stat()
    assert st.st_size == 256 * MiB
    assert st.st_blocks * 512 < 16 * MiB, f"{st.st_blocks * 512} bytes allocated"
    with open(out, "rb") as f:
        assert f.read(100 * MiB) == bytes(100 * MiB)
        assert f.read(3 * MiB) == data
        assert f.read() == bytes(256 * MiB - 103 * MiB)

    # Only the extents that hold data crossed the network.
    again = fabric(elsewhere, "vdisk", "read", "vm1", "-o", str(out), "--json")
    assert json.loads(again.stdout)["transferred_bytes"] == 3 * MiB

    fabric(elsewhere, "down")
    stopped = fabric(elsewhere, "vdisk", "list", check=False)
    assert stopped.returncode == exits.NOT_RUNNING
    assert stopped.stderr == (
        f"error: the cluster in {home / 'c1'} is not running "
        f"(`fabric up --dir {home / 'c1'}` starts it)\n"
    )


def health(view: dict[str, Any], node: dict[str, Any]) -> Any:
    token = (Path(view["dir"]) / "admin.token").read_text().strip()
    request = urllib.request.Request(
        f"http://{node['address']}/api/v1/health", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_a_second_cluster_on_the_default_config_takes_free_ports(
    tmp_path: Path, stops: list[Path]
) -> None:
    stops += [tmp_path / "first", tmp_path / "second"]
    fabric(tmp_path, "up", "--nodes", "1", "--dir", "first")
    second = fabric(tmp_path, "up", "--nodes", "1", "--dir", "second")
    views = [json.loads(fabric(tmp_path, "status", "--json", "--dir", d).stdout) for d in stops]
    addresses = {v["nodes"][0]["address"] for v in views}
    assert len(addresses) == 2, addresses
    assert all(v["leader"] == "n1" and v["nodes"][0]["state"] == "UP" for v in views)
    assert "already in use" in second.stdout, "up says why it took other ports"
