"""The URL import guard on a real node: loopback refused by default and opened by the
allow-list, the node itself refused always (directly and through a redirect), and URL
secrets used for the fetch but never shown. Every request goes through the CLI."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from fabric.config import load_config
from tests.integration.conftest import Cluster, free_ports

DISK = bytes(range(256)) * 4096  # 1 MiB with no format's signature: a raw image


class Source:
    """An image source on 127.0.0.1: ``/disk.img``, and ``/to?url=U`` redirecting to U."""

    def __init__(self) -> None:
        self.port = free_ports(1)[0]
        self.seen: list[tuple[str, str | None]] = []
        """(path, Authorization header) of every request."""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def url(self, path: str, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"

    async def _disk(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, request.headers.get("Authorization")))
        return web.Response(body=DISK)

    async def _to(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, request.headers.get("Authorization")))
        raise web.HTTPFound(request.query["url"])

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.add_routes([web.get("/disk.img", self._disk), web.get("/to", self._to)])
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Source:
        self._thread.start()
        assert self._ready.wait(10), "the source did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def source() -> Iterator[Source]:
    with Source() as s:
        yield s


def imported(cluster: Cluster, url: str, name: str) -> tuple[int, str, str]:
    """``fabric image import``: (exit code, stdout, stderr) once the import ended."""
    out = cluster.fabric("image", "import", url, "--name", name, check=False)
    return out.returncode, out.stdout, out.stderr


def node_port(cluster: Cluster) -> int:
    return load_config(str(cluster.dir / "cluster.toml")).nodes[0].port


def test_loopback_is_refused_by_default(
    make_cluster: Callable[..., Cluster], source: Source
) -> None:
    cluster = make_cluster(1)
    cluster.fabric("up", "--config", str(cluster.config))
    # A literal address is refused by the API at once (400), nothing created.
    code, _, err = imported(cluster, source.url("/disk.img"), "direct")
    assert code == 1 and "refusing 127.0.0.1 (loopback)" in err and "[import] allow" in err
    code, _, err = imported(cluster, f"http://127.0.0.1:{node_port(cluster)}/metrics", "own")
    assert code == 1 and "(node n1 of this cluster)" in err
    # A name is resolved (by the system's resolver) and refused where the node connects.
    code, _, err = imported(cluster, f"http://localhost:{source.port}/disk.img", "named")
    assert code == 1 and "(loopback)" in err, err
    image = json.loads(cluster.fabric("image", "show", "named").stdout)
    assert image["state"] == "ERROR" and "(loopback)" in image["error"]
    assert source.seen == []  # nothing ever reached the source


def test_the_allow_list_opens_loopback_but_never_the_node_itself(
    make_cluster: Callable[..., Cluster], source: Source
) -> None:
    cluster = make_cluster(1, import_allow=("127.0.0.1/32",))
    cluster.fabric("up", "--config", str(cluster.config))
    code, out, err = imported(cluster, source.url("/disk.img"), "allowed")
    assert code == 0, err
    assert json.loads(out)["state"] == "ACTIVE"

    node = f"http://127.0.0.1:{node_port(cluster)}"
    code, _, err = imported(cluster, f"{node}/metrics", "metrics")
    assert code == 1 and "(node n1 of this cluster)" in err

    source.seen.clear()
    for target, fragment in [
        (f"{node}/api/v1/cluster", "(node n1 of this cluster)"),
        (f"http://127.0.0.2:{source.port}/disk.img", "refusing 127.0.0.2 (loopback)"),
    ]:
        name = f"hop{len(source.seen)}"
        code, _, err = imported(cluster, source.url(f"/to?url={target}"), name)
        assert code == 1 and fragment in err, err
        image = json.loads(cluster.fabric("image", "show", name).stdout)
        assert image["state"] == "ERROR" and fragment in image["error"]
    assert [path for path, _ in source.seen] == ["/to", "/to"]  # no hop beyond the source


def test_url_credentials_are_used_but_never_shown(
    make_cluster: Callable[..., Cluster], source: Source
) -> None:
    cluster = make_cluster(1, import_allow=("127.0.0.1/32",))
    cluster.fabric("up", "--config", str(cluster.config))
    url = source.url("/disk.img?token=tok-5e3c7a", userinfo="alice:pw-8d1f2b@")
    code, out, err = imported(cluster, url, "private")
    assert code == 0, err
    assert source.seen == [("/disk.img", "Basic YWxpY2U6cHctOGQxZjJi")]  # alice:pw-8d1f2b
    shown = json.loads(out)["source_url"]
    assert shown == source.url("/disk.img?token=REDACTED")
    logs = list(Path(cluster.dir, "nodes").glob("*/node.log"))
    assert logs, "no node log found"
    texts = [
        out,
        err,
        cluster.fabric("image", "show", "private").stdout,
        cluster.fabric("image", "list", "--json").stdout,
        *(p.read_text() for p in logs),
    ]
    for secret in ("pw-8d1f2b", "tok-5e3c7a", "alice"):
        assert not [t for t in texts if secret in t], secret
