"""The console's forms on containers, vdisks and nodes: each calls what the API route
it stands for calls (``tokens.CONSOLE_ACTIONS`` gives it that route's role), then goes
back to its page with what happened in one line."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from fabric import units
from fabric.errors import BadRequest, FabricError
from nodes.api import NODE
from nodes.api_data import container_create
from nodes.api_healing import drain
from nodes.console.pages import see_other


async def answered(back: str, action: Awaitable[str]) -> web.Response:
    """Back to the page ``back`` with what ``action`` did, or with its refusal."""
    try:
        done = await action
    except FabricError as exc:
        return see_other(back, f"error: {exc.message}")
    return see_other(back, done)


async def create_container(request: web.Request) -> web.Response:
    form = await request.post()

    async def create() -> str:
        created = await container_create(request.app[NODE], container_body(form))
        return f"container {created['name']} created"

    return await answered("/containers", create())


def container_body(form: Any) -> dict[str, Any]:
    """The API's JSON body for the console's container form (a checkbox is absent when
    unticked; an empty EC field means no EC)."""
    body: dict[str, Any] = {
        "name": str(form.get("name", "")).strip(),
        "dedup": form.get("dedup") == "on",
        "compression": str(form.get("compression", "none")),
    }
    try:
        body["rf"] = int(str(form.get("rf", "2")))
    except ValueError:
        raise BadRequest("rf must be a number") from None
    ec = str(form.get("ec", "")).strip()
    if ec:
        body["ec"] = ec
    return body


async def delete_container(request: web.Request) -> web.Response:
    name = str((await request.post()).get("name", ""))

    async def delete() -> str:
        await request.app[NODE].catalog.delete_container(name)
        return f"container {name} deleted"

    return await answered("/containers", delete())


async def create_vdisk(request: web.Request) -> web.Response:
    form = await request.post()

    async def create() -> str:
        try:
            size = units.parse_size(str(form.get("size", "")))
        except ValueError as exc:
            raise BadRequest(f"size: {exc}") from None
        name, container = str(form.get("name", "")).strip(), str(form.get("container", ""))
        vd = await request.app[NODE].catalog.create_vdisk(name, container, size)
        return f"vdisk {vd.name} created in {vd.container}"

    return await answered("/vdisks", create())


async def delete_vdisk(request: web.Request) -> web.Response:
    ref = str((await request.post()).get("id", ""))

    async def delete() -> str:
        await request.app[NODE].catalog.delete_vdisk(ref)
        return f"vdisk {ref} deleted; its extents are released"

    return await answered("/vdisks", delete())


async def drain_node(request: web.Request) -> web.Response:
    form = await request.post()
    target, undo = str(form.get("id", "")), form.get("undo") == "on"

    async def drain_or_undo() -> str:
        view = await drain(request.app[NODE], target, undo)
        if undo:
            return f"{target} no longer draining"
        moving = f"{view['groups']} extent groups and {view['strips']} strips"
        return f"{target} draining: {moving} to move off it"

    return await answered("/nodes", drain_or_undo())


def routes() -> list[web.RouteDef]:
    return [
        web.post("/containers", create_container),
        web.post("/containers/delete", delete_container),
        web.post("/vdisks", create_vdisk),
        web.post("/vdisks/delete", delete_vdisk),
        web.post("/nodes/drain", drain_node),
    ]
