"""HTTP routes of the data path: containers and vdisks (``/api/v1/containers``, ``/vdisks``)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from fabric.errors import BadRequest, FabricError, NotFound
from fabric.extents.policy import policy_from_request
from fabric.metadata.records import to_json
from nodes.api import NODE, json_body, query
from nodes.node import Node
from nodes.services.accounting import container_views

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _views(request: web.Request) -> list[dict[str, Any]]:
    node = request.app[NODE]
    return container_views(node.metadata.state)


async def create_container(request: web.Request) -> web.Response:
    view = await container_create(request.app[NODE], await json_body(request))
    return web.json_response(view, status=201)


async def container_create(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/v1/containers``'s answer (the console's form makes the same call)."""
    policy = policy_from_request(body)
    name = body.get("name")
    if not isinstance(name, str):
        raise BadRequest("body needs a container 'name'")
    await node.catalog.create_container(name, policy)
    return next(v for v in container_views(node.metadata.state) if v["name"] == name)


async def list_containers(request: web.Request) -> web.Response:
    await request.app[NODE].metadata.read_index()
    return web.json_response(_views(request))


async def get_container(request: web.Request) -> web.Response:
    await request.app[NODE].metadata.read_index()
    name = request.match_info["name"]
    for view in _views(request):
        if view["name"] == name:
            return web.json_response(view)
    raise NotFound(f"no container {name!r}")


async def delete_container(request: web.Request) -> web.Response:
    await request.app[NODE].catalog.delete_container(request.match_info["name"])
    return web.Response(status=204)


async def create_vdisk(request: web.Request) -> web.Response:
    body = await json_body(request)
    vd = await request.app[NODE].catalog.create_vdisk(body["name"], body["container"], body["size"])
    return web.json_response(to_json(vd), status=201)


async def list_vdisks(request: web.Request) -> web.Response:
    return web.json_response([to_json(vd) for vd in await request.app[NODE].catalog.vdisks()])


async def get_vdisk(request: web.Request) -> web.Response:
    vd = await request.app[NODE].catalog.get_vdisk(request.match_info["id"])
    return web.json_response(to_json(vd))


async def get_vdisk_extents(request: web.Request) -> web.Response:
    """Which extents of a vdisk hold data: a reader skips the rest (a thin vdisk is
    mostly holes), a sparse copy leaves them holes."""
    node = request.app[NODE]
    vd = await node.catalog.get_vdisk(request.match_info["id"])
    return web.json_response(
        {
            "size": vd.size,
            "extent_bytes": node.config.extent_bytes,
            "mapped": extent_runs(node.metadata.state.block_map(vd.id)),
        }
    )


def extent_runs(block_map: dict[int, str]) -> list[list[int]]:
    """``[first index, count]`` of every run of consecutive extents that hold data."""
    runs: list[list[int]] = []
    for index in sorted(i for i, extent_id in block_map.items() if extent_id):
        if runs and runs[-1][0] + runs[-1][1] == index:
            runs[-1][1] += 1
        else:
            runs.append([index, 1])
    return runs


async def delete_vdisk(request: web.Request) -> web.Response:
    await request.app[NODE].catalog.delete_vdisk(request.match_info["id"])
    return web.Response(status=204)


async def write_vdisk(request: web.Request) -> web.Response:
    offset = query(request).get("offset", 0)
    length = request.content_length
    if length is None:
        raise web.HTTPLengthRequired(text="a vdisk write needs Content-Length")

    node = request.app[NODE]
    extent = node.config.extent_bytes

    async def body() -> AsyncIterator[bytes]:
        # Whole extents, read straight from the socket's buffers: the writer takes them
        # as they are instead of re-cutting (copying) the stream.
        pos, end = offset, offset + length
        while pos < end:
            want = min(extent - pos % extent, end - pos)
            try:
                chunk = await request.content.readexactly(want)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    yield exc.partial
                return
            yield chunk
            pos += want

    written = await node.writer.write(request.match_info["id"], offset, length, body())
    return web.json_response({"written": written, "offset": offset})


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) of a single ``Range: bytes=...`` header; None if absent."""
    if header is None:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise web.HTTPRequestRangeNotSatisfiable(text=f"unsupported Range {header!r}")
    if not m.group(1):
        n = min(int(m.group(2)), size)
        return size - n, n
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        raise web.HTTPRequestRangeNotSatisfiable(
            text=f"range {header!r} outside {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, min(end, size - 1) - start + 1


async def read_vdisk(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    vd = await node.catalog.get_vdisk(request.match_info["id"])
    params = query(request)
    rng = parse_range(request.headers.get("Range"), vd.size)
    offset, length = rng if rng else (params.get("offset", 0), params.get("length"))
    vd, length, stream = await node.reader.read(vd.id, offset, length)
    return await send_stream(request, stream, offset, length, vd.size, partial=bool(rng))


async def send_stream(
    request: web.Request,
    stream: AsyncIterator[bytes],
    offset: int,
    length: int,
    size: int,
    partial: bool,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Stream raw bytes ``[offset, offset + length)`` of a ``size``-byte object.

    Once the status and ``Content-Length`` are out, an error can no longer be answered:
    if the stream fails (every copy of an extent bad or gone), the connection is closed
    so the client sees a body shorter than announced, and fails at once instead of
    waiting for bytes that will never come.
    """
    resp = web.StreamResponse(status=206 if partial else 200)
    resp.content_type = "application/octet-stream"
    resp.content_length = length
    resp.headers["Accept-Ranges"] = "bytes"
    resp.headers.update(headers or {})
    if partial:
        resp.headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{size}"
    await resp.prepare(request)
    sent = 0
    try:
        async for chunk in stream:
            await resp.write(chunk)
            sent += len(chunk)
    except ConnectionError:
        raise  # the client went away: there is nobody left to tell
    except Exception as exc:
        _abort(request, resp, exc, f"after {sent} of {length} bytes")
        return resp
    await resp.write_eof()
    return resp


def _abort(request: web.Request, resp: web.StreamResponse, exc: Exception, where: str) -> None:
    """Close a response whose headers are out; the short body tells the client it failed."""
    what = f"{request.method} {request.path}"
    if isinstance(exc, FabricError):
        log.warning("%s failed %s: %s; closing the connection", what, where, exc.message)
    else:
        log.exception("%s failed %s; closing the connection", what, where)
    resp.force_close()
    # Returning an error response now would write its status line into the body.
    if request.transport is not None:
        request.transport.close()


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/containers", create_container),
        web.get("/api/v1/containers", list_containers),
        web.get("/api/v1/containers/{name}", get_container),
        web.delete("/api/v1/containers/{name}", delete_container),
        web.post("/api/v1/vdisks", create_vdisk),
        web.get("/api/v1/vdisks", list_vdisks),
        web.get("/api/v1/vdisks/{id}", get_vdisk),
        web.get("/api/v1/vdisks/{id}/extents", get_vdisk_extents),
        web.delete("/api/v1/vdisks/{id}", delete_vdisk),
        web.put("/api/v1/vdisks/{id}/data", write_vdisk),
        web.get("/api/v1/vdisks/{id}/data", read_vdisk),
    ]
