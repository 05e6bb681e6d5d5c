"""The console's fault panel: the faults active on every node, clear them, inject one;
through the coordinator ``/api/v1/faults`` (and so ``fabric fault``) calls."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from fabric import faults
from fabric.errors import BadRequest, FabricError
from nodes.api import NODE
from nodes.api_faults import coordinator
from nodes.console.pages import may, page, see_other


async def panel(request: web.Request) -> web.Response:
    listing = await coordinator(request).listing()
    context = {
        **listing,
        "now": request.app[NODE].clock.wall(),
        "kinds": faults.KINDS,
        "selects": faults.SELECTS,
        "can_change": may(request, "POST", "/faults"),
    }
    return page(request, "faults.html", context)


def inject_body(form: Any) -> dict[str, Any]:
    """The API's JSON body for the inject form (empty fields: the kind's defaults)."""
    body: dict[str, Any] = {"kind": str(form.get("kind", ""))}
    nodes = [n for n in re.split(r"[\s,]+", str(form.get("nodes", ""))) if n]
    select = str(form.get("select", ""))
    if nodes:
        body["target"] = {"nodes": nodes}
    elif select:
        body["target"] = {"select": select}
    body["params"] = faults.parse_params(str(form.get("params", "")).split())
    duration = str(form.get("duration", "")).strip()
    if duration:
        try:
            body["duration_s"] = float(duration)
        except ValueError:
            raise BadRequest("duration must be a number of seconds") from None
    return body


async def inject(request: web.Request) -> web.Response:
    form = await request.post()
    try:
        fault = await coordinator(request).inject(inject_body(form))
    except FabricError as exc:
        return see_other("/faults", f"error: {exc.message}")
    missed = fault.get("unreachable") or {}
    note = f" (unreachable: {', '.join(sorted(missed))})" if missed else ""
    return see_other(
        "/faults", f"{fault['id']} {fault['kind']} on {', '.join(fault['nodes'])}{note}"
    )


async def clear(request: web.Request) -> web.Response:
    form = await request.post()
    fault_id = str(form.get("id", ""))
    try:
        await coordinator(request).clear(fault_id)
    except FabricError as exc:
        return see_other("/faults", f"error: {exc.message}")
    return see_other("/faults", f"cleared {fault_id or 'every fault'}")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/faults", panel),
        web.post("/faults", inject),
        web.post("/faults/clear", clear),
    ]
