"""Node-to-node calls over real loopback HTTP: bulk bytes ride raw, forged layouts are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fabric.config import default_config_text, parse_config, sized_config
from fabric.ports import PeerUnreachable
from fabric.wire.codec import decode, encode_parts
from fabric.wire.messages import AppendExtents, AppendReply, ErrorReply, ReadExtent
from nodes.runtime import CLUSTER_HEADER, FROM_HEADER, PARTS_HEADER, HttpTransport
from scripts.benchkit import free_ports


@pytest.fixture
async def pair() -> AsyncIterator[tuple[HttpTransport, list[Any], str]]:
    """n1's transport calling n2's, which records what it was handed."""
    ports = free_ports(2)
    base = sized_config(parse_config(default_config_text()), 2)
    cfg = replace(
        base, nodes=tuple(replace(n, port=p) for n, p in zip(base.nodes, ports, strict=True))
    )
    got: list[Any] = []

    async def on_call(frm: str, message: Any) -> Any:
        got.append((frm, message))
        if isinstance(message, AppendExtents):
            return AppendReply((message.at,))
        return AppendReply(())

    server = HttpTransport("n2", cfg)
    server.serve(on_call, lambda frm, m: None)
    app = web.Application(client_max_size=1 << 30)
    app.add_routes(server.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", ports[1]).start()
    client = HttpTransport("n1", cfg)
    try:
        yield client, got, cfg.node("n2").url
    finally:
        await client.close()
        await server.close()
        await runner.cleanup()


async def test_an_append_arrives_whole_with_its_bulk_bytes(
    pair: tuple[HttpTransport, list[Any], str],
) -> None:
    client, got, _ = pair
    payloads = (bytes(range(256)) * 4096, b"", b"tail")
    reply = await client.call("n2", AppendExtents("g1", payloads, 8192), 5.0)
    assert reply == AppendReply((8192,))
    assert got == [("n1", AppendExtents("g1", payloads, 8192))]
    # A message without bulk bytes still goes as one msgpack body.
    await client.call("n2", ReadExtent("g1", 0, 10), 5.0)
    assert got[-1] == ("n1", ReadExtent("g1", 0, 10))


@pytest.mark.parametrize(
    "layout, why",
    [
        ("x,1", "bad X-Fabric-Parts"),
        ("5", "sizes"),
        ("-1,2", "sizes"),
        ("3,3", "adds up"),
    ],
)
async def test_a_forged_parts_layout_is_refused(
    pair: tuple[HttpTransport, list[Any], str], layout: str, why: str
) -> None:
    client, got, url = pair
    header, parts = encode_parts(AppendExtents("g1", (b"abcd",), 0))
    body = header + b"".join(parts)
    headers = {FROM_HEADER: "n1", CLUSTER_HEADER: client.cluster_id, PARTS_HEADER: layout}
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + "/internal/v1/call", data=body, headers=headers) as resp,
    ):
        assert resp.status == 400
        assert why in await resp.text()
    assert got == []


async def test_bulk_parts_for_a_message_without_any_are_refused(
    pair: tuple[HttpTransport, list[Any], str],
) -> None:
    client, got, url = pair
    header, _ = encode_parts(ReadExtent("g1", 0, 10))
    headers = {
        FROM_HEADER: "n1",
        CLUSTER_HEADER: client.cluster_id,
        PARTS_HEADER: f"{len(header)},3",
    }
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + "/internal/v1/call", data=header + b"xyz", headers=headers) as resp,
    ):
        assert resp.status == 400
        assert "carries no bulk parts" in await resp.text()
    assert got == []


async def test_an_unreachable_peer_is_reported_as_such(
    pair: tuple[HttpTransport, list[Any], str],
) -> None:
    client, _, _ = pair
    client.urls["n2"] = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(PeerUnreachable):
        await client.call("n2", AppendExtents("g1", (b"abc",), 0), 2.0)


def test_error_replies_stay_decodable() -> None:
    header, parts = encode_parts(ErrorReply("conflict", "taken"))
    assert parts == () and decode(header) == ErrorReply("conflict", "taken")
