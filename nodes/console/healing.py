"""The console's healing page: how the cluster restores and verifies its data (rebuild
progress and settings, scrub settings and this node's passes), with the forms of
``fabric rebuild`` and ``fabric scrub``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from aiohttp import web

from fabric import units
from fabric.errors import BadRequest
from fabric.metadata import healing as healing_state
from nodes.api import NODE
from nodes.api_healing import rebuild_answer, set_rebuild, set_scrub
from nodes.console.actions import answered
from nodes.console.pages import may, page
from nodes.openapi import operation
from nodes.schemas import check


async def healing(request: web.Request) -> web.Response:
    node = request.app[NODE]
    rebuild = await rebuild_answer(node)
    scrub = healing_state.effective_scrub(node.metadata.state, node.config.scrub)
    context = {
        "rebuild": rebuild,
        "scrub": dataclasses.asdict(scrub),
        "scrub_node": node.id,
        "scrub_here": dataclasses.asdict(node.scrubber.stats),
        "can_change": may(request, "POST", "/healing/rebuild"),
    }
    return page(request, "healing.html", context)


Fields = dict[str, tuple[str, Callable[[str], Any]]]
REBUILD_FIELDS: Fields = {
    "rate": ("bytes_per_s", units.parse_rate),
    "per_node": ("per_node", int),
    "delay": ("delay_s", units.parse_seconds),
}
SCRUB_FIELDS: Fields = {
    "rate": ("bytes_per_s", units.parse_rate),
    "cycle": ("cycle_s", units.parse_seconds),
}


def settings_body(form: Any, fields: Fields, api_path: str) -> dict[str, Any]:
    """The API's body for a settings form: each filled field read as the CLI reads its
    option (an empty one stays as it is), then held to the API route's own schema."""
    body: dict[str, Any] = {}
    for name, (key, parse) in fields.items():
        text = str(form.get(name, "")).strip()
        if text:
            try:
                body[key] = parse(text)
            except ValueError as exc:
                raise BadRequest(f"{name}: {exc}") from None
    schema = operation("PUT", api_path).body
    assert schema is not None
    check(schema, body)
    return body


async def change_rebuild(request: web.Request) -> web.Response:
    form = await request.post()

    async def change() -> str:
        body = settings_body(form, REBUILD_FIELDS, "/api/v1/rebuild")
        if not body:
            return "nothing to change"
        done = await set_rebuild(request.app[NODE], body)
        return "rebuild settings: " + _said(done["settings"], REBUILD_FIELDS)

    return await answered("/healing", change())


async def change_scrub(request: web.Request) -> web.Response:
    form = await request.post()

    async def change() -> str:
        body = settings_body(form, SCRUB_FIELDS, "/api/v1/scrub")
        now = form.get("now") == "on"
        if not body and not now:
            return "nothing to change"
        done = await set_scrub(request.app[NODE], {**body, "now": True} if now else body)
        started = "a scrub pass starts now on every node; " if now else ""
        return started + "scrub settings: " + _said(done["settings"], SCRUB_FIELDS)

    return await answered("/healing", change())


def _said(settings: dict[str, Any], fields: Fields) -> str:
    return ", ".join(f"{key}={settings[key]}" for key, _ in fields.values())


def routes() -> list[web.RouteDef]:
    return [
        web.get("/healing", healing),
        web.post("/healing/rebuild", change_rebuild),
        web.post("/healing/scrub", change_scrub),
    ]
