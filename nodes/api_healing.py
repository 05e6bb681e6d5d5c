"""HTTP routes of healing: the event log, rebuild settings and progress, scrubbing."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from fabric import limits
from fabric.errors import BadRequest, Conflict, NotFound, from_code
from fabric.metadata import healing
from fabric.metadata.commands import SetNodeDrain, SetRebuildSettings, SetScrubSettings
from fabric.metadata.records import EVENT_KINDS, RebuildSettings, ScrubSettings, to_json
from nodes.api import NODE, json_body, query
from nodes.node import Node


async def get_events(request: web.Request) -> web.Response:
    """``?since=SEQ`` (events after it), ``limit``, ``kind`` (comma-separated)."""
    return web.json_response(await events_answer(request.app[NODE], query(request)))


async def events_answer(node: Node, params: dict[str, Any]) -> dict[str, Any]:
    """``GET /api/v1/events``'s answer for its checked query ``params``."""
    since = params.get("since", 0)
    limit = params.get("limit", limits.EVENTS_PAGE)
    kinds = {k for k in params.get("kind", "").split(",") if k}
    unknown = sorted(kinds - set(EVENT_KINDS))
    if unknown:
        raise BadRequest(f"unknown event kind {unknown[0]!r}; kinds: {', '.join(EVENT_KINDS)}")
    await node.metadata.read_index()
    state = node.metadata.state
    if "since" in params:
        found = healing.events(state, since, limit)
    else:
        found = healing.latest_events(state, limit)
    nxt = found[-1].seq if found else max(since, healing.next_seq(state) - 1)
    if kinds:
        found = [e for e in found if e.kind in kinds]
    return {"events": [to_json(e) for e in found], "last_seq": nxt}


def _settings_from(body: dict[str, Any], current: Any) -> Any:
    """``current`` with the fields ``body`` (checked against its schema) changes."""
    kinds = {f.name: f.type for f in dataclasses.fields(current)}
    # The schema lets 1 through for 1.0; the record keeps its field's type.
    values = {k: float(v) if kinds[k] in ("float", float) else v for k, v in body.items()}
    return dataclasses.replace(current, **values)


async def rebuild_answer(node: Node) -> dict[str, Any]:
    view = await node.cluster_view()
    return {
        "settings": view.get("rebuild", {}),
        "containers": [
            {
                "name": c["name"],
                "resiliency": c["resiliency"],
                **{k: c.get(k) for k in _PROGRESS},
            }
            for c in view.get("containers", [])
        ],
    }


_PROGRESS = (
    "reduced_resiliency_bytes",
    "rebuild_bytes_per_s",
    "rebuild_eta_s",
    "reduced_resiliency_seconds",
    "rebuilt_bytes",
)


async def get_rebuild(request: web.Request) -> web.Response:
    return web.json_response(await rebuild_answer(request.app[NODE]))


async def put_rebuild(request: web.Request) -> web.Response:
    """Change ``bytes_per_s``, ``per_node`` or ``delay_s`` of the running cluster."""
    return web.json_response(await set_rebuild(request.app[NODE], await json_body(request)))


async def set_rebuild(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """``PUT /api/v1/rebuild``'s answer for its checked ``body`` (the console's form)."""
    await node.metadata.read_index()
    current = node.rebuild.settings()
    settings: RebuildSettings = _settings_from(body, current)
    result = await node.metadata.propose(SetRebuildSettings(settings))
    if not result.ok:
        raise from_code(result.code, result.message)
    await node.events.record("settings", "rebuild", f"rebuild settings: {_describe(settings)}")
    return await rebuild_answer(node)


async def get_scrub(request: web.Request) -> web.Response:
    node = request.app[NODE]
    await node.metadata.read_index()
    settings = healing.effective_scrub(node.metadata.state, node.config.scrub)
    return web.json_response({"settings": dataclasses.asdict(settings)})


async def put_scrub(request: web.Request) -> web.Response:
    """Change ``bytes_per_s`` or ``cycle_s``; ``{"now": true}`` starts a pass on every node."""
    return web.json_response(await set_scrub(request.app[NODE], await json_body(request)))


async def set_scrub(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """``PUT /api/v1/scrub``'s answer for its checked ``body`` (the console's form)."""
    body = dict(body)
    now = body.pop("now", False)
    await node.metadata.read_index()
    current = healing.effective_scrub(node.metadata.state, node.config.scrub)
    settings: ScrubSettings = _settings_from(body, current)
    if now:
        settings = dataclasses.replace(settings, run_now=settings.run_now + 1)
    result = await node.metadata.propose(SetScrubSettings(settings))
    if not result.ok:
        raise from_code(result.code, result.message)
    what = "a scrub pass now on every node; " if now else ""
    await node.events.record("settings", "scrub", f"{what}scrub settings: {_describe(settings)}")
    return {"settings": dataclasses.asdict(settings)}


async def post_drain(request: web.Request) -> web.Response:
    """Start (``{"undo": true}``: stop) moving every copy off a node before it leaves."""
    body = await json_body(request)
    undo = body.get("undo", False)
    view = await drain(request.app[NODE], request.match_info["id"], bool(undo))
    return web.json_response(view)


async def drain(node: Node, target: str, undo: bool) -> dict[str, Any]:
    """``POST /api/v1/nodes/{id}/drain``'s answer (the console's button does the same)."""
    await node.metadata.read_index()
    state = node.metadata.state
    if target not in state.nodes():
        raise NotFound(f"no node {target!r}")
    if not undo:
        problem = drain_problem(node, target)
        if problem:
            raise Conflict(f"cannot drain {target}: {problem}")
    result = await node.metadata.propose(SetNodeDrain(target, not undo, node.clock.wall()))
    if not result.ok:
        raise from_code(result.code, result.message)
    return drain_view(node, target)


def drain_problem(node: Node, target: str) -> str:
    """Why draining ``target`` would leave some container unable to keep its copies."""
    state = node.metadata.state
    domains = node.catalog.fault_domains()
    left = {
        domains.get(n, n)
        for n in state.up_nodes() - healing.draining_nodes(state) - {target}
        if n in domains
    }
    for c in state.containers():
        p = c.policy
        need = max(p.rf, p.ec_k + p.ec_m if p.ec_k else 0)
        if len(left) < need:
            what = f"EC {p.ec_k}+{p.ec_m}" if p.ec_k and need > p.rf else f"RF{p.rf}"
            return (
                f"container {c.name!r} needs {need} fault domains for {what}; "
                f"only {len(left)} would be left ({', '.join(sorted(left)) or 'none'})"
            )
    return ""


def drain_view(node: Node, target: str) -> dict[str, Any]:
    state = node.metadata.state
    record = state.nodes().get(target)
    groups = state.idx.egroups_on.get(target, set())
    held = sum(eg.size for eg in state.egroups(sorted(groups)))
    return {
        "id": target,
        "draining": bool(record and record.draining),
        "groups": len(groups),
        "strips": len(state.idx.strips_on.get(target, ())),
        "held_bytes": held,
    }


async def get_drain(request: web.Request) -> web.Response:
    node = request.app[NODE]
    target = request.match_info["id"]
    await node.metadata.read_index()
    if target not in node.metadata.state.nodes():
        raise NotFound(f"no node {target!r}")
    return web.json_response(drain_view(node, target))


def _describe(settings: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(settings).items() if k != "run_now")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/events", get_events),
        web.get("/api/v1/rebuild", get_rebuild),
        web.put("/api/v1/rebuild", put_rebuild),
        web.get("/api/v1/scrub", get_scrub),
        web.put("/api/v1/scrub", put_scrub),
        web.get("/api/v1/nodes/{id}/drain", get_drain),
        web.post("/api/v1/nodes/{id}/drain", post_drain),
    ]
