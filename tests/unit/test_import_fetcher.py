"""URL import's real HTTP client against servers on 127.0.0.1, names resolved by an
injected resolver: refusals happen before any connection, at every redirect hop and at
every resolution. Nothing here connects anywhere but loopback."""

from __future__ import annotations

import base64
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohappyeyeballs
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from fabric.ports import SourceFailed
from fabric.urlguard import OwnNode, UrlGuard
from nodes.runtime import HttpFetcher
from scripts.benchkit import free_ports

DATA = bytes(range(256)) * 1024


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection the client attempts, checked to be on loopback before it is made:
    were the guard broken, these tests would fail here instead of reaching 10.1.2.3."""
    attempted: list[str] = []
    real = aiohappyeyeballs.start_connection

    async def start_connection(addr_infos: Any, **kwargs: Any) -> socket.socket:
        for info in addr_infos:
            address = info[4][0]
            attempted.append(address)
            assert ipaddress.ip_address(address).is_loopback, f"connecting to {address}"
        return await real(addr_infos, **kwargs)

    monkeypatch.setattr(aiohappyeyeballs, "start_connection", start_connection)
    return attempted


class MapResolver(AbstractResolver):
    """The test's DNS: each name answers the next of its scripted address lists."""

    def __init__(self, names: dict[str, list[list[str]]]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        answers = self.names.get(host)
        if not answers:
            raise OSError(f"no such name {host}")
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        pass


@dataclass
class Servers:
    source: int
    """Port of the image source (127.0.0.1)."""
    node: int
    """Port of a stand-in for this cluster's node n1 (127.0.0.1)."""
    hits: list[str] = field(default_factory=list)
    """Path of every request either server saw, prefixed with its name."""
    auth: list[str | None] = field(default_factory=list)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    src_port, node_port = free_ports(2)
    s = Servers(src_port, node_port)

    async def disk(request: web.Request) -> web.Response:
        s.hits.append(f"source{request.path}")
        s.auth.append(request.headers.get("Authorization"))
        start = (
            int(request.headers["Range"].split("=")[1].rstrip("-"))
            if "Range" in request.headers
            else 0
        )
        return web.Response(body=DATA[start:], status=206 if start else 200)

    async def redirect(request: web.Request) -> web.Response:
        s.hits.append(f"source{request.path}")
        s.auth.append(request.headers.get("Authorization"))
        raise web.HTTPFound(request.query["to"])

    async def node(request: web.Request) -> web.Response:
        s.hits.append(f"node{request.path}")
        return web.Response(text="# the node's metrics")

    source = web.Application()
    source.add_routes([web.get("/disk.img", disk), web.get("/redirect", redirect)])
    node_app = web.Application()
    node_app.add_routes([web.get("/{tail:.*}", node)])
    runners = [web.AppRunner(source), web.AppRunner(node_app)]
    for runner, port in zip(runners, (src_port, node_port), strict=True):
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield s
    finally:
        for runner in runners:
            await runner.cleanup()


def guard(s: Servers, *allow: str) -> UrlGuard:
    return UrlGuard(allow, [OwnNode("n1", "127.0.0.1", s.node)])


async def fetch(fetcher: HttpFetcher, url: str, g: UrlGuard, offset: int = 0) -> tuple[int, bytes]:
    async with fetcher.get(url, offset, g) as (head, body):
        return head.status, b"".join([chunk async for chunk in body])


async def refused(fetcher: HttpFetcher, url: str, g: UrlGuard) -> str:
    with pytest.raises(SourceFailed) as err:
        await fetch(fetcher, url, g)
    return str(err.value)


async def test_loopback_is_refused_by_default_and_opened_by_the_allow_list(
    servers: Servers,
) -> None:
    fetcher = HttpFetcher(MapResolver({}))
    url = f"http://127.0.0.1:{servers.source}/disk.img"
    message = await refused(fetcher, url, guard(servers))
    assert message == "refusing 127.0.0.1 (loopback); allow it with [import] allow in the config"
    assert servers.hits == []  # refused before connecting
    assert await fetch(fetcher, url, guard(servers, "127.0.0.1/32")) == (200, DATA)
    await fetcher.close()


async def test_a_name_resolving_to_a_private_address_is_refused_before_connecting(
    servers: Servers,
) -> None:
    resolver = MapResolver({"mirror.example": [["10.1.2.3"]]})
    fetcher = HttpFetcher(resolver)
    message = await refused(
        fetcher, f"http://mirror.example:{servers.source}/disk.img", guard(servers, "127.0.0.1")
    )
    assert message.startswith("refusing 10.1.2.3 (private)")
    assert resolver.asked == ["mirror.example"] and servers.hits == []


async def test_only_the_allowed_addresses_of_a_name_are_connected_to(
    servers: Servers, loopback_only: list[str]
) -> None:
    # 10.1.2.3 comes first: were it not dropped, the connection would go there.
    resolver = MapResolver({"mixed.example": [["10.1.2.3", "127.0.0.1"]]})
    fetcher = HttpFetcher(resolver)
    got = await fetch(
        fetcher, f"http://mixed.example:{servers.source}/disk.img", guard(servers, "127.0.0.1")
    )
    assert got == (200, DATA) and servers.hits == ["source/disk.img"]
    assert loopback_only == ["127.0.0.1"]


async def test_every_connection_resolves_and_checks_again(servers: Servers) -> None:
    """DNS rebinding: the name answers an allowed address, then a refused one; the resume
    request is refused, not served from a cache of the first answer."""
    resolver = MapResolver({"rebind.example": [["127.0.0.1"], ["127.0.0.2"]]})
    fetcher = HttpFetcher(resolver)
    g = guard(servers, "127.0.0.1/32")
    url = f"http://rebind.example:{servers.source}/disk.img"
    assert await fetch(fetcher, url, g) == (200, DATA)
    with pytest.raises(SourceFailed, match=r"refusing 127\.0\.0\.2 \(loopback\)"):
        await fetch(fetcher, url, g, offset=100)
    assert resolver.asked == ["rebind.example", "rebind.example"]
    assert servers.hits == ["source/disk.img"]


async def test_each_redirect_hop_is_checked(servers: Servers) -> None:
    resolver = MapResolver({"inside.example": [["192.168.1.20"]]})
    fetcher = HttpFetcher(resolver)
    g = guard(servers, "127.0.0.1/32")
    base = f"http://127.0.0.1:{servers.source}/redirect?to="
    node = f"http://127.0.0.1:{servers.node}"
    cases = [
        (f"{node}/metrics", f"refusing 127.0.0.1:{servers.node} (node n1 of this cluster)"),
        (f"{node}/api/v1/cluster", "(node n1 of this cluster)"),
        ("http://10.1.2.3/disk.img", "refusing 10.1.2.3 (private)"),
        ("http://[::ffff:169.254.169.254]/latest/", "(link-local, in IPv6 form)"),
        ("http://inside.example/disk.img", "refusing 192.168.1.20 (private)"),
        ("ftp://127.0.0.1/disk.img", "only http and https"),
    ]
    for to, fragment in cases:
        servers.hits.clear()
        message = await refused(fetcher, base + to, g)
        assert fragment in message, (to, message)
        assert servers.hits == ["source/redirect"], servers.hits  # nothing beyond
    # The same redirect to an allowed place is followed.
    ok = f"http://127.0.0.1:{servers.source}/disk.img"
    assert await fetch(fetcher, base + ok, g) == (200, DATA)


async def test_too_many_redirects(servers: Servers) -> None:
    url = f"http://127.0.0.1:{servers.source}/disk.img"
    for _ in range(7):
        url = f"http://127.0.0.1:{servers.source}/redirect?to={url}"
    g = guard(servers, "127.0.0.1")
    message = await refused(HttpFetcher(MapResolver({})), url, g)
    assert message.startswith("more than 5 redirects")


async def test_the_node_itself_is_refused_even_when_its_range_is_allowed(
    servers: Servers,
) -> None:
    fetcher = HttpFetcher(MapResolver({"alias.example": [["127.0.0.1"]]}))
    g = guard(servers, "127.0.0.0/8", "alias.example")
    for url in (
        f"http://127.0.0.1:{servers.node}/metrics",
        f"http://[::ffff:127.0.0.1]:{servers.node}/metrics",
        f"http://alias.example:{servers.node}/metrics",
    ):
        assert "(node n1 of this cluster)" in await refused(fetcher, url, g), url
    assert servers.hits == []


async def test_credentials_are_used_but_only_on_their_own_origin(servers: Servers) -> None:
    fetcher = HttpFetcher(MapResolver({"localhost.example": [["127.0.0.1"]]}))
    g = guard(servers, "127.0.0.1", "localhost.example")
    own = f"http://127.0.0.1:{servers.source}"
    assert await fetch(fetcher, f"http://u:pw@127.0.0.1:{servers.source}/disk.img", g) == (
        200,
        DATA,
    )
    basic = "Basic " + base64.b64encode(b"u:pw").decode()
    assert servers.auth == [basic]
    # Same origin: the redirect keeps the credentials; another origin does not get them.
    servers.auth.clear()
    await fetch(fetcher, f"http://u:pw@127.0.0.1:{servers.source}/redirect?to={own}/disk.img", g)
    assert servers.auth == [basic, basic]
    servers.auth.clear()
    other = f"http://localhost.example:{servers.source}/disk.img"
    await fetch(fetcher, f"http://u:pw@127.0.0.1:{servers.source}/redirect?to={other}", g)
    assert servers.auth == [basic, None]
