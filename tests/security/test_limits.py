"""Limits that hold, against a real node on loopback, with raw sockets.

A client that trickles its request head is cut off; uploads whose bodies stall are
answered 408, their images go ERROR and their conversion slots serve the next upload;
one client address cannot hold more connections than its cap, while a node's links are
counted apart. The node runs with short limits from its config's ``[limits]``, so the
whole file takes a few seconds; every wait is a socket deadline or a polled condition.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fabric import limits
from fabric.config import (
    ServeLimits,
    default_config_text,
    parse_config,
    render_config,
    sized_config,
)
from tests.integration.conftest import Cluster, free_ports

HEADER_TIMEOUT_S = 2.0
BODY_IDLE_S = 1.0
PER_CLIENT = 6
HEADERS: dict[str, str] = {}
"""Sent with every request of this file (the one place to add credentials)."""
MiB = 1 << 20


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One node with short limits; yields its port."""
    root: Path = tmp_path_factory.mktemp("limits")
    cfg = sized_config(parse_config(default_config_text()), 1)
    cfg = replace(
        cfg,
        nodes=tuple(replace(n, port=p) for n, p in zip(cfg.nodes, free_ports(1), strict=True)),
        limits=ServeLimits(
            header_timeout_s=HEADER_TIMEOUT_S,
            body_idle_s=BODY_IDLE_S,
            connections_per_client=PER_CLIENT,
        ),
    )
    (root / "cluster.toml").write_text(render_config(cfg))
    cluster = Cluster(root / "data", root / "cluster.toml")
    cluster.fabric("up", "--config", str(cluster.config))
    HEADERS["Authorization"] = f"Bearer {cluster.token}"
    try:
        yield cfg.nodes[0].port
    finally:
        cluster.fabric("down", check=False)


# --- the one place requests are made -------------------------------------------------------
def head(method: str, path: str, length: int | None = None, end: bool = True) -> bytes:
    """A raw request head (``end=False``: its last line is still to come)."""
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in HEADERS.items()),
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + ("\r\n" if end else "")).encode()


def api(port: int, method: str, path: str, body: Any = None, data: bytes | None = None) -> Any:
    """A JSON API call through urllib: (status, decoded answer)."""
    payload = data if data is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=payload, method=method, headers=dict(HEADERS)
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def answer(sock: socket.socket, deadline_s: float) -> bytes:
    """Everything the node sends until it closes the connection (or a full answer came)."""
    sock.settimeout(deadline_s)
    got = b""
    end = time.monotonic() + deadline_s
    try:
        while time.monotonic() < end:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
            head_end = got.find(b"\r\n\r\n")
            if head_end >= 0:
                length = _content_length(got[:head_end])
                if len(got) - head_end - 4 >= length:
                    break
    except (TimeoutError, ConnectionResetError):
        pass
    return got


def _content_length(raw_head: bytes) -> int:
    for line in raw_head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def wait(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached in {deadline_s} s")
        time.sleep(0.05)  # polling pace, not synchronisation: the condition decides


# --- the stories ----------------------------------------------------------------------------
def test_a_client_trickling_its_headers_is_cut_off(node: int) -> None:
    sock = connect(node)
    start = time.monotonic()
    sock.sendall(head("GET", "/api/v1/health", end=False))
    sock.settimeout(0.2)  # a byte every 0.2 s: bytes keep arriving, the head never ends
    closed_after = None
    try:
        while time.monotonic() - start < 4 * HEADER_TIMEOUT_S:
            try:
                sock.sendall(b"X")
                if sock.recv(4096) == b"":
                    closed_after = time.monotonic() - start
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - start
                break
    finally:
        sock.close()
    assert closed_after is not None, "the node kept a trickling request head open"
    assert HEADER_TIMEOUT_S * 0.9 <= closed_after <= HEADER_TIMEOUT_S + 1.5, closed_after
    assert api(node, "GET", "/api/v1/health")[0] == 200  # the node serves on


def test_stalled_uploads_fail_and_free_their_conversion_slots(node: int) -> None:
    ids = [api(node, "POST", "/api/v1/images", {"name": f"stall{i}"})[1]["id"] for i in range(5)]
    stalled = []
    for image_id in ids[: limits.MAX_INGESTS]:
        sock = connect(node)
        sock.sendall(head("PUT", f"/api/v1/images/{image_id}/file", length=8 * MiB))
        sock.sendall(bytes(256 * 1024))  # then nothing more
        stalled.append(sock)
    wait(
        lambda: api(node, "GET", "/api/v1/health")[1]["conversions"] == limits.MAX_INGESTS,
        5,
        "every conversion slot taken",
    )
    raw = bytes(2 * MiB)
    status, refused = api(node, "PUT", f"/api/v1/images/{ids[-1]}/file", data=raw)
    assert status == 503 and "already converting" in refused["error"]["message"], refused
    for sock in stalled:
        got = answer(sock, BODY_IDLE_S * 3 + 2)
        sock.close()
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
        assert b'"body_stalled"' in got, got
    wait(
        lambda: api(node, "GET", "/api/v1/health")[1]["conversions"] == 0,
        5,
        "the slots freed",
    )
    for image_id in ids[: limits.MAX_INGESTS]:
        image = api(node, "GET", f"/api/v1/images/{image_id}")[1]
        assert image["state"] == "ERROR", image
        assert "no byte of the request body arrived" in image["error"], image
    names = {v["name"] for v in api(node, "GET", "/api/v1/vdisks")[1]}
    assert not any(name.startswith("image-") for name in names), names  # dropped, collected
    status, done = api(node, "PUT", f"/api/v1/images/{ids[-1]}/file", data=raw)
    assert status == 200 and done["state"] == "ACTIVE", done


def test_one_address_holds_at_most_its_cap_and_node_links_are_apart(node: int) -> None:
    # An address that is no node's: refused at once, before it sends anything.
    held = [connect(node, "127.0.0.2") for _ in range(PER_CLIENT)]
    extra = connect(node, "127.0.0.2")
    got = answer(extra, 2)
    extra.close()
    assert got == b"" or (got.startswith(b"HTTP/1.1 503") and b"too_many_connections" in got)
    held.pop().close()  # one closes: room for one more

    def admitted() -> bool:
        sock = connect(node, "127.0.0.2")
        sock.sendall(head("GET", "/api/v1/health"))
        ok = answer(sock, 2).startswith(b"HTTP/1.1 200")
        if ok:
            held.append(sock)
        else:
            sock.close()
        return ok

    wait(admitted, 3, "a connection admitted once another closed")
    for sock in held:
        sock.close()
    # The node's own address (local clients share it): sorted by the first request.
    local = []
    for _ in range(PER_CLIENT):
        sock = connect(node)
        sock.sendall(head("GET", "/api/v1/health"))
        assert answer(sock, 2).startswith(b"HTTP/1.1 200")
        local.append(sock)
    over = connect(node)
    over.sendall(head("GET", "/api/v1/health"))
    got = answer(over, 2)
    over.close()
    assert got.startswith(b"HTTP/1.1 503") and b"too_many_connections" in got, got
    link = connect(node)  # a node-to-node request: counted apart, never refused for the cap
    link.sendall(head("POST", "/internal/v1/call", length=0))
    got = answer(link, 2)
    assert got.startswith(b"HTTP/1.1 ") and b"too_many_connections" not in got, got
    link.sendall(head("GET", "/api/v1/health"))  # passing for a link does not evade the cap
    got = answer(link, 2)
    link.close()
    assert got.startswith(b"HTTP/1.1 503") and b"too_many_connections" in got, got
    for sock in local:
        sock.close()
