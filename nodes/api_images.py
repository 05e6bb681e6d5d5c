"""HTTP routes of the image service (``/api/v1/images``) and tasks (``/api/v1/tasks``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from fabric.errors import Conflict
from nodes.api import NODE, json_body
from nodes.api_data import parse_range, send_stream


async def create_image(request: web.Request) -> web.Response:
    body = await json_body(request)
    image = await request.app[NODE].images.create(body)
    return web.json_response(image, status=202 if image.get("task_id") else 201)


async def list_images(request: web.Request) -> web.Response:
    return web.json_response(await request.app[NODE].images.listing())


async def get_image(request: web.Request) -> web.Response:
    return web.json_response(await request.app[NODE].images.get(request.match_info["id"]))


async def delete_image(request: web.Request) -> web.Response:
    await request.app[NODE].images.delete(request.match_info["id"])
    return web.Response(status=204)


async def upload_image(request: web.Request) -> web.Response:
    async def body() -> AsyncIterator[bytes]:
        # The buffers as they came off the socket: re-cutting them into fixed sizes would
        # copy the whole upload on the event loop; the ingest batches them anyway.
        async for chunk, _ in request.content.iter_chunks():
            if chunk:
                yield chunk

    image = await request.app[NODE].images.upload(request.match_info["id"], body())
    return web.json_response(image)


async def download_image(request: web.Request) -> web.StreamResponse:
    return await send_image(request, request.match_info["id"])


async def send_image(
    request: web.Request, ref: str, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    """The raw bytes of ACTIVE image ``ref`` (or the range asked), streamed."""
    node = request.app[NODE]
    image = await node.images.get(ref)
    if image["state"] != "ACTIVE":
        raise Conflict(f"image {image['name']!r} is {image['state']}, not ACTIVE")
    record = node.images.image(image["id"])
    assert record.vdisk_id is not None and record.virtual_size is not None, "ACTIVE image"
    size = record.virtual_size
    rng = parse_range(request.headers.get("Range"), size)
    offset, length = rng if rng else (0, size)
    _, length, stream = await node.reader.read(record.vdisk_id, offset, length)
    return await send_stream(request, stream, offset, length, size, bool(rng), headers)


async def get_task(request: web.Request) -> web.Response:
    return web.json_response(await request.app[NODE].images.task(request.match_info["id"]))


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/images", create_image),
        web.get("/api/v1/images", list_images),
        web.get("/api/v1/images/{id}", get_image),
        web.delete("/api/v1/images/{id}", delete_image),
        web.put("/api/v1/images/{id}/file", upload_image),
        web.get("/api/v1/images/{id}/file", download_image),
        web.get("/api/v1/tasks/{id}", get_task),
    ]
