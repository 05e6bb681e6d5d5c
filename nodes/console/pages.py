"""The console's pages: each calls what the matching API handler calls, then renders."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from fabric import limits, tokens
from fabric.errors import Unauthorized
from fabric.metadata import keys
from fabric.metadata.records import to_json
from nodes.api import NODE
from nodes.api_access import GATE
from nodes.api_healing import events_answer
from nodes.console import session
from nodes.console.summary import summary
from nodes.services.accounting import container_views


def page(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    """``template`` rendered; a flash message shown on it is spent.

    The layout's values are given here, not by a context processor: those run as a
    middleware inside ``check_access``, so a page refusing a request would miss them.
    """
    flash = request.cookies.get(session.FLASH_COOKIE, "")
    node = request.app[NODE]
    layout = {
        "token": request.get("token"),
        "path": request.path,
        "flash": flash,
        "flash_error": flash.startswith("error:"),
        "node_id": node.id,
        "out_of_service": node.out_of_service,
    }
    response = aiohttp_jinja2.render_template(
        template, request, {**layout, **context}, status=status
    )
    if flash:
        response.del_cookie(session.FLASH_COOKIE, path="/")
    return response


def see_other(location: str, flash: str = "") -> web.Response:
    """A redirect after a form (303: the browser follows it with a GET)."""
    response = web.Response(status=303, headers={"Location": location})
    if flash:
        response.set_cookie(
            session.FLASH_COOKIE, flash[:300], path="/", httponly=True, samesite="Strict"
        )
    return response


def may(request: web.Request, method: str, path: str) -> bool:
    """Whether the logged-in token's role may make this request (to show its form)."""
    record = request.get("token")
    needed = tokens.required_role(method, path)
    return needed is None or (record is not None and tokens.allows(record.role, needed))


# --- login -------------------------------------------------------------------------------
async def login_form(request: web.Request) -> web.Response:
    target = session.safe_next(request.query.get("next"))
    return page(request, "login.html", {"next": target, "error": ""})


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    presented = str(form.get("token", "")).strip()
    target = session.safe_next(str(form.get("next", "")))
    gate = request.app[GATE]
    try:
        await gate.ensure_fresh()
        await gate.verify(presented)
    except Unauthorized as exc:
        context = {"next": target, "error": exc.message}
        return page(request, "login.html", context, status=401)
    response = see_other(target)
    session.log_in(response, request, presented)
    return response


async def logout(request: web.Request) -> web.Response:
    response = see_other("/login")
    session.log_out(response)
    return response


# --- the cluster ---------------------------------------------------------------------------
async def index(request: web.Request) -> web.Response:
    return page(request, "index.html", {"summary": await summary(request.app[NODE])})


async def nodes(request: web.Request) -> web.Response:
    view = await request.app[NODE].cluster_view()
    context = {"view": view, "can_drain": may(request, "POST", "/nodes/drain")}
    return page(request, "nodes.html", context)


async def containers(request: web.Request) -> web.Response:
    node = request.app[NODE]
    await node.metadata.read_index()
    context = {
        "containers": container_views(node.metadata.state),
        "can_create": may(request, "POST", "/containers"),
    }
    return page(request, "containers.html", context)


async def vdisks(request: web.Request) -> web.Response:
    node = request.app[NODE]
    found = await node.catalog.vdisks()
    context = {
        "vdisks": [to_json(vd) for vd in found],
        "containers": sorted(c.name for c in node.metadata.state.containers()),
        "can_change": may(request, "POST", "/vdisks"),
    }
    return page(request, "vdisks.html", context)


async def tasks(request: web.Request) -> web.Response:
    node = request.app[NODE]
    await node.metadata.read_index()
    state = node.metadata.state
    found = [to_json(item.value) for _, item in state.scan(keys.TASK)]
    running = any(t["state"] == "RUNNING" for t in found)
    return page(request, "tasks.html", {"tasks": found, "running": running})


async def events(request: web.Request) -> web.Response:
    answer = await events_answer(request.app[NODE], {"limit": limits.CONSOLE_EVENTS_SHOWN})
    return page(request, "events.html", {"events": list(reversed(answer["events"]))})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/login", login_form),
        web.post("/login", login),
        web.post("/logout", logout),
        web.get("/", index),
        web.get("/nodes", nodes),
        web.get("/containers", containers),
        web.get("/vdisks", vdisks),
        web.get("/tasks", tasks),
        web.get("/events", events),
    ]
