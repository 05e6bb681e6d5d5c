"""Liveness stories: nothing a user runs hangs on a bad read, a paused node or a bad start.

Each story reproduces a bug of the shells that hung or gave up (issue 8, item 9): a read
that failed after its headers were sent left the connection open; the client waited for
a paused node for 30 s or more; ``fabric up`` stopped every node when one could not
start.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from fabric import limits
from shell.client import FabricClient, InDoubt
from tests.integration.conftest import Cluster, free_ports

MiB = 1 << 20
QUICK_S = 10.0
"""What "at once" means for a command that must fail, on a loaded machine."""
PASS_OVER_S = 15.0
"""A command that meets a paused node first: the progress and probe timeouts (5 s) on
top of its own work; it used to wait 31 s, or an hour."""


def timed(cluster: Cluster, *args: str) -> tuple[float, int, str, str]:
    """Run ``fabric ARGS``: (seconds, exit code, stdout, stderr). Far above the bound
    asserted, the subprocess timeout only turns a hang into a failure."""
    start = time.monotonic()
    out = cluster.fabric(*args, check=False, timeout=60)
    return time.monotonic() - start, out.returncode, out.stdout, out.stderr


def spoil_extent_groups(cluster: Cluster) -> None:
    """Every extent group file on every disk loses its bytes: no copy can be read.

    Truncated, not deleted: a node keeps its files open, so a deleted file still reads.
    """
    groups = list(cluster.dir.glob("nodes/*/disk*/*.eg"))
    assert groups, "the story needs stored extents"
    for path in groups:
        os.truncate(path, 0)


def node_port(cluster: Cluster, index: int) -> int:
    """The port of the ``index``-th node (0-based) of the cluster's config."""
    return int(cluster.config.read_text().split("port = ")[index + 1].split()[0])


# --- a read that fails mid-stream -----------------------------------------------------------
def test_a_read_that_fails_mid_stream_fails_the_command_at_once(
    make_cluster: Callable[[int], Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(1)
    cluster.fabric("up", "--config", str(cluster.config))
    cluster.fabric("container", "create", "one", "--rf", "1")
    cluster.fabric("vdisk", "create", "v", "--container", "one", "--size", "4M")
    data = tmp_path / "data.bin"
    data.write_bytes(random.Random(8).randbytes(3 * MiB))
    # The first MiB stays a hole: it reads as zeros, so the failure comes after bytes
    # and headers are out, mid-stream.
    cluster.fabric("vdisk", "write", "v", str(data), "--offset", "1M")
    image = tmp_path / "disk.raw"
    image.write_bytes(random.Random(9).randbytes(2 * MiB))
    cluster.fabric("image", "upload", str(image), "--name", "img", "--container", "one")
    spoil_extent_groups(cluster)

    out = tmp_path / "back.bin"
    elapsed, code, _, err = timed(cluster, "vdisk", "read", "v", "-o", str(out))
    assert code == 1, err
    assert elapsed < QUICK_S, f"the read took {elapsed:.1f} s to fail"
    # -o FILE asks only for the extents that hold data: the stream breaks at its start.
    assert f"connection closed after 0 of {3 * MiB} bytes" in err
    assert not out.exists(), "a partial file must not look like a good copy"

    elapsed, code, stdout, err = timed(cluster, "vdisk", "read", "v", "-o", "-")
    assert code == 1 and elapsed < QUICK_S, err
    assert len(stdout) < 4 * MiB  # the hole's zeros, then nothing

    # The node says why it cut the connection.
    log = (cluster.dir / "nodes" / "n1" / "node.log").read_text()
    assert f"failed after {MiB} of {4 * MiB} bytes" in log

    # An image download breaks off the same way; its partial file is kept for --resume.
    got = tmp_path / "img.raw"
    elapsed, code, _, err = timed(cluster, "image", "download", "img", "-o", str(got))
    assert code == 1 and elapsed < QUICK_S, err
    assert "connection closed after 0 of" in err and "--resume" in err


# --- a paused node ----------------------------------------------------------------------------
def test_a_paused_node_is_passed_over_by_every_command(
    make_cluster: Callable[[int], Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(3)
    cluster.fabric("up", "--config", str(cluster.config))
    cluster.fabric("container", "create", "c", "--rf", "2")
    cluster.fabric("vdisk", "create", "v", "--container", "c", "--size", "64M")
    data = tmp_path / "data.bin"
    data.write_bytes(random.Random(3).randbytes(8 * MiB))
    # The client tries the nodes in the config's order: n1 first.
    first = next(n for n in cluster.status()["nodes"] if n["id"] == "n1")

    os.kill(first["pid"], signal.SIGSTOP)
    try:
        for args in (
            ("kv", "put", "k", '"v"'),
            ("vdisk", "write", "v", str(data)),
            ("container", "create", "after", "--rf", "2"),  # not safe to repeat: probed first
            ("status", "--json"),
        ):
            elapsed, code, stdout, err = timed(cluster, *args)
            assert code == 0, f"fabric {' '.join(args)} exited {code}: {err}"
            assert elapsed < PASS_OVER_S, f"fabric {' '.join(args)} took {elapsed:.1f} s"
            if args[0] == "status":
                assert json.loads(stdout)["leader"] in ("n2", "n3")
        back = tmp_path / "back.bin"
        cluster.fabric("vdisk", "read", "v", "-o", str(back), "--length", "8M", timeout=60)
        assert back.read_bytes() == data.read_bytes()
    finally:
        os.kill(first["pid"], signal.SIGCONT)


class StandIn:
    """A node stand-in on loopback: it answers requests late (busy) or never (hung), and
    answers health probes always, never, or only the first few (it hangs after them)."""

    def __init__(self, answer_after_s: float | None, probes_answered: int | None) -> None:
        self.answer_after_s = answer_after_s
        self.probes_answered = probes_answered
        self.calls: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(f"{request.method} {request.path}")
        if request.path == "/api/v1/health":
            probes = self.calls.count("GET /api/v1/health")
            if self.probes_answered is not None and probes > self.probes_answered:
                await asyncio.Event().wait()  # hung: the request is taken, never answered
        elif self.answer_after_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(self.answer_after_s)
        return web.json_response({"version": 7, "name": "c"})

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        port = free_ports(1)[0]
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


async def test_a_busy_node_is_waited_for_and_a_hung_one_passed_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Short periods keep the story quick; the rule is the same at any scale.
    monkeypatch.setattr(limits, "CLIENT_PROGRESS_TIMEOUT_S", 0.5)
    monkeypatch.setattr(limits, "CLIENT_PROBE_TIMEOUT_S", 1.0)
    hung = StandIn(answer_after_s=None, probes_answered=0)
    busy = StandIn(answer_after_s=3.0, probes_answered=None)  # a long commit or conversion
    spare = StandIn(answer_after_s=0, probes_answered=None)
    pausing = StandIn(answer_after_s=None, probes_answered=1)  # hangs after one probe
    async with (
        hung.serving() as h,
        busy.serving() as b,
        spare.serving() as s,
        pausing.serving() as p,
    ):
        async with FabricClient([h, b, s]) as client:
            assert await client.kv_put("k", 1) == 7
            assert busy.calls.count("PUT /api/v1/kv/k") == 1
            assert not spare.calls, "a busy node that answers its probe is not left"
            assert client.urls == [b, s, h], "the hung node is tried last from now on"

        # A create is not safe to repeat: it goes only to a node that answers a probe.
        async with FabricClient([h, s]) as client:
            assert (await client.create_container("c", rf=1))["name"] == "c"
        assert "POST /api/v1/containers" not in hung.calls
        assert spare.calls.count("POST /api/v1/containers") == 1

        # A node that hangs after taking it leaves the create in doubt: never sent twice.
        async with FabricClient([p, s]) as client:
            with pytest.raises(InDoubt, match="may or may not have been applied"):
                await client.create_container("d", rf=1)
        assert pausing.calls.count("POST /api/v1/containers") == 1
        assert spare.calls.count("POST /api/v1/containers") == 1


# --- a node that cannot start -----------------------------------------------------------------
def test_up_starts_every_node_it_can_and_names_the_one_that_cannot(
    make_cluster: Callable[[int], Cluster],
) -> None:
    cluster = make_cluster(3)
    cluster.fabric("init", "--config", str(cluster.config))  # `up` refuses taken ports at first
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", node_port(cluster, 1)))  # n2's port
        squatter.listen()
        elapsed, code, stdout, err = timed(cluster, "up")
        assert code == 6, f"{stdout}\n{err}"
        assert elapsed < 30, f"fabric up took {elapsed:.1f} s"
        assert "node n2 failed to start: its address is already in use" in err
        assert str(cluster.dir / "nodes" / "n2" / "node.log") in err
        assert "address already in use" in err.split("node.log", 1)[1]  # the log's tail
        assert "running without n2" in err

        # The other two are a quorum: they run, elect a leader and serve.
        view = cluster.status()
        nodes = {n["id"]: n for n in view["nodes"]}
        assert view["leader"] in ("n1", "n3")
        assert nodes["n1"]["state"] == nodes["n3"]["state"] == "UP"
        assert nodes["n1"]["pid"] and nodes["n3"]["pid"]
        assert nodes["n2"]["state"] == "DOWN" and nodes["n2"]["pid"] is None
        cluster.fabric("kv", "put", "k", "1")

    # With its port free, another `up` starts just the missing node.
    out = cluster.fabric("up")
    assert "starting 1 of 3 nodes" in out.stdout
    assert {n["state"] for n in cluster.status()["nodes"]} == {"UP"}
    assert cluster.fabric("kv", "get", "k").stdout.strip() == "1"
