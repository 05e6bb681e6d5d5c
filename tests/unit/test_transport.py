"""Node-to-node calls over real loopback HTTP: bulk bytes ride raw; unsigned, replayed,
tampered and forged requests and replies are refused; so are forged layouts."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fabric import peerauth
from fabric.config import default_config_text, parse_config, sized_config
from fabric.keys import ClusterKeys
from fabric.ports import PeerUnreachable
from fabric.wire.codec import decode, encode, encode_parts
from fabric.wire.messages import AppendExtents, AppendReply, ErrorReply, ReadExtent
from nodes.runtime import CLUSTER_HEADER, FROM_HEADER, PARTS_HEADER, HttpTransport
from scripts.benchkit import free_ports

KEYS = ClusterKeys(b"k" * 32)
OTHER_KEYS = ClusterKeys(b"x" * 32)


def signed_headers(
    client: HttpTransport, body: bytes, parts: str = "", at: float | None = None
) -> dict[str, str]:
    """What n1 would send for ``body`` (signed with its key, now or ``at``)."""
    now = time.time() if at is None else at
    digest = peerauth.body_digest(body)
    headers = client.auth.sign("POST", "/internal/v1/call", now, os.urandom(16), digest, parts)
    if parts:
        headers[PARTS_HEADER] = parts
    return headers


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

    server = HttpTransport("n2", cfg, KEYS)
    server.serve(on_call, lambda frm, m: None)
    app = web.Application(client_max_size=1 << 30)
    app.add_routes(server.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", ports[1]).start()
    client = HttpTransport("n1", cfg, KEYS)
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
    headers = signed_headers(client, body, layout)
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
    headers = signed_headers(client, header + b"xyz", f"{len(header)},3")
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


async def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + "/internal/v1/call", data=body, headers=headers) as resp,
    ):
        return resp.status, (await resp.read()).decode(errors="replace")


async def test_a_request_with_only_the_public_headers_is_refused_unread(
    pair: tuple[HttpTransport, list[Any], str],
) -> None:
    """The attack of issue 11: the sender's name and the (public) cluster id were enough."""
    client, got, url = pair
    header, _ = encode_parts(ReadExtent("g1", 0, 10))
    status, text = await _post(url, header, {FROM_HEADER: "n1", CLUSTER_HEADER: client.cluster_id})
    assert (status, got) == (401, [])
    assert "not a signed node-to-node request" in text


async def test_a_request_signed_with_another_key_is_refused(
    pair: tuple[HttpTransport, list[Any], str],
) -> None:
    client, got, url = pair
    header, _ = encode_parts(ReadExtent("g1", 0, 10))
    forger = peerauth.PeerAuth(OTHER_KEYS.peer_key, "n1", client.cluster_id, bool, 60, 10)
    digest = peerauth.body_digest(header)
    headers = forger.sign("POST", "/internal/v1/call", time.time(), os.urandom(16), digest)
    status, text = await _post(url, header, headers)
    assert (status, got) == (401, [])
    assert "bad signature" in text


async def test_a_captured_request_cannot_be_replayed(
    pair: tuple[HttpTransport, list[Any], str],
) -> None:
    client, got, url = pair
    header, _ = encode_parts(ReadExtent("g1", 0, 10))
    headers = signed_headers(client, header)
    assert (await _post(url, header, headers))[0] == 200
    status, text = await _post(url, header, headers)
    assert status == 401 and "replayed" in text
    assert len(got) == 1


async def test_a_signed_request_with_another_body_is_refused(
    pair: tuple[HttpTransport, list[Any], str],
) -> None:
    client, got, url = pair
    header, _ = encode_parts(ReadExtent("g1", 0, 10))
    forged, _ = encode_parts(ReadExtent("g1", 0, 1 << 20))
    status, text = await _post(url, forged, signed_headers(client, header))
    assert (status, got) == (401, [])
    assert "does not match its signed digest" in text


async def test_an_old_signed_request_is_refused(
    pair: tuple[HttpTransport, list[Any], str],
) -> None:
    client, got, url = pair
    header, _ = encode_parts(ReadExtent("g1", 0, 10))
    status, text = await _post(url, header, signed_headers(client, header, at=time.time() - 3600))
    assert (status, got) == (401, [])
    assert "clocks skewed, or a replay" in text


async def test_a_reply_not_signed_by_the_peer_is_not_believed(
    pair: tuple[HttpTransport, list[Any], str],
) -> None:
    """A process that took over a dead node's port cannot answer in its name."""
    client, _, _ = pair

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=encode(AppendReply((0,))), headers={peerauth.AUTH: "0" * 64})

    app = web.Application()
    app.add_routes([web.post("/internal/v1/call", answer)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_ports(1)[0]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client.urls["n2"] = f"http://127.0.0.1:{port}"
    try:
        with pytest.raises(PeerUnreachable, match="does not carry the cluster's signature"):
            await client.call("n2", ReadExtent("g1", 0, 10), 5.0)
    finally:
        await runner.cleanup()
