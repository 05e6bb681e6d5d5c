"""The console's images page: list, upload from the browser, import from a URL,
download and delete, each through the image service the API calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, web

from fabric.errors import BadRequest, FabricError
from fabric.images.declared import FORMATS
from nodes.api import NODE
from nodes.api_images import send_image
from nodes.console.pages import may, page, see_other

UPLOAD_CHUNK = 256 * 1024
"""How much of the file part is read at a time: the upload streams, never whole."""
FIELD_LIMIT = 4096
"""The longest text field of the forms (a name, a URL)."""
_FIELDS = {
    "name": "name",
    "source_format": "source_format",
    "image_type": "image_type",
    "container": "container",
    "checksum": "checksum",
    "url": "source_url",
}
"""Form field -> the API's JSON field; an empty field is left out (not declared)."""


def wants_json(request: web.Request) -> bool:
    """The page's script asks for the image as JSON; a plain form gets a redirect."""
    return "application/json" in request.headers.get("Accept", "")


async def images(request: web.Request) -> web.Response:
    context = {
        "images": await request.app[NODE].images.listing(),
        "can_change": may(request, "POST", "/images"),
        "formats": FORMATS,
    }
    return page(request, "images.html", context)


async def _field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(FIELD_LIMIT):
        data += chunk
        if len(data) > FIELD_LIMIT:
            raise BadRequest(f"form field {part.name} is longer than {FIELD_LIMIT} bytes")
    return data.decode("utf-8", "replace").strip()


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(UPLOAD_CHUNK):
        yield chunk


async def upload(request: web.Request) -> web.StreamResponse:
    """A multipart form: the text fields first (browsers send them in the page's order),
    then the file, streamed into the same ingest as ``PUT /api/v1/images/{id}/file``."""
    service = request.app[NODE].images
    try:
        reader = await request.multipart()
        body: dict[str, Any] = {}
        while True:
            part = await reader.next()
            if part is None:
                raise BadRequest("the form has no file")
            if not isinstance(part, BodyPartReader):
                raise BadRequest("a nested multipart form is not an image")
            if part.name == "file":
                break
            value = await _field(part)
            if part.name in _FIELDS and part.name != "url" and value:
                body[_FIELDS[part.name]] = value
        body.setdefault("name", part.filename or "")
        created = await service.create(body)
        image = await service.upload(created["id"], _chunks(part))
    except FabricError as exc:
        if wants_json(request):
            return web.json_response({"error": exc.message}, status=exc.status)
        return see_other("/images", f"error: {exc.message}")
    if wants_json(request):
        return web.json_response(image)
    return see_other("/images", f"image {image['name']} is {image['state']}")


async def import_url(request: web.Request) -> web.Response:
    form = await request.post()
    body = {
        api: value for field, api in _FIELDS.items() if (value := str(form.get(field, "")).strip())
    }
    if "source_url" not in body:
        return see_other("/images", "error: give the URL to import from")
    try:
        image = await request.app[NODE].images.create(body)
    except FabricError as exc:
        return see_other("/images", f"error: {exc.message}")
    return see_other("/tasks", f"importing image {image['name']} (task {image['task_id']})")


async def delete(request: web.Request) -> web.Response:
    form = await request.post()
    ref = str(form.get("id", ""))
    try:
        await request.app[NODE].images.delete(ref)
    except FabricError as exc:
        return see_other("/images", f"error: {exc.message}")
    return see_other("/images", f"image {ref} deleted")


async def download(request: web.Request) -> web.StreamResponse:
    service = request.app[NODE].images
    image = await service.get(request.match_info["id"])
    # Names are [A-Za-z0-9._-] (check_name): nothing to quote or escape.
    disposition = f'attachment; filename="{image["name"]}.raw"'
    # The stream's headers are out before the console's middleware could add its own.
    headers = {"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"}
    return await send_image(request, image["id"], headers)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/images", images),
        web.post("/images", upload),
        web.post("/images/import", import_url),
        web.post("/images/delete", delete),
        web.get("/images/{id}/download", download),
    ]
