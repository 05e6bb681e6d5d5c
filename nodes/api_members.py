"""HTTP routes of cluster membership: nodes join, become voters, and leave.

``POST /api/v1/nodes`` records a new node (address, disks, labels) and adds it to Raft
as a learner; the node is then started (``fabric node add`` spawns it) and catches up.
``POST /api/v1/nodes/{id}/promote`` makes it a voter once it has caught up (the leader
retries while it has not). ``DELETE /api/v1/nodes/{id}`` removes a node from Raft and
from the membership: refused while it still holds data and is UP (drain it first); a
node that is DOWN may go at once, its copies are being rebuilt as lost.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fabric.errors import Conflict, NotFound, from_code
from fabric.metadata.commands import SetMember
from fabric.metadata.records import MemberRecord, to_json
from nodes.api import NODE, json_body
from nodes.node import Node


def _member(body: dict[str, Any]) -> MemberRecord:
    """A member from a body already checked against ``MEMBER_REQUEST``."""
    return MemberRecord(
        body["id"],
        body.get("host", "127.0.0.1"),
        body["port"],
        tuple(body.get("disks", ["disk0"])),
        dict(body.get("labels", {})),
        tuple(body.get("disk_capacity", [])),
    )


def _describe(node: Node, node_id: str) -> dict[str, Any]:
    raft = node.metadata.raft
    voters = set(raft.voters) if raft else set(node.config.voters)
    members = {n.id: n for n in node.membership.nodes()}
    nc = members.get(node_id)
    return {
        "id": node_id,
        "address": nc.address if nc else None,
        "member": nc is not None,
        "role": "voter" if node_id in voters else ("member" if nc else "removed"),
    }


async def post_node(request: web.Request) -> web.Response:
    node = request.app[NODE]
    member = _member(await json_body(request))
    await node.metadata.read_index()
    known = {n.id: n for n in node.membership.nodes()}
    if member.id in known:
        raise Conflict(f"node {member.id} is already a member")
    taken = {n.address: n.id for n in known.values()}
    address = f"{member.host}:{member.port}"
    if address in taken:
        raise Conflict(f"{address} is already node {taken[address]}'s address")
    result = await node.metadata.propose(SetMember(member, node.clock.wall()))
    if not result.ok:
        raise from_code(result.code, result.message)
    await node.metadata.change_membership("add_learner", member.id)
    return web.json_response({**_describe(node, member.id), **to_json(member)}, status=201)


async def post_promote(request: web.Request) -> web.Response:
    node = request.app[NODE]
    node_id = request.match_info["id"]
    await node.metadata.read_index()
    if node_id not in node.membership.ids():
        raise NotFound(f"no node {node_id!r}")
    await node.metadata.change_membership("promote", node_id)
    await node.events.record("membership", node_id, f"node {node_id} is a voter")
    return web.json_response(_describe(node, node_id))


async def post_rejoin(request: web.Request) -> web.Response:
    """A voter that lost its Raft state comes back through the membership: removed,
    added as a learner, caught up, promoted (it abstains until it was removed)."""
    node = request.app[NODE]
    node_id = request.match_info["id"]
    await node.metadata.read_index()
    if node_id not in node.membership.ids():
        raise NotFound(f"no node {node_id!r}")
    raft = node.metadata.raft
    was_voter = raft is not None and node_id in raft.voters
    await node.metadata.change_membership("remove", node_id)
    await node.metadata.change_membership("add_learner", node_id)
    if was_voter:
        await node.metadata.change_membership("promote", node_id)
    await node.events.record("membership", node_id, f"node {node_id} rejoined the metadata")
    return web.json_response(_describe(node, node_id))


async def delete_node(request: web.Request) -> web.Response:
    node = request.app[NODE]
    node_id = request.match_info["id"]
    await node.metadata.read_index()
    state = node.metadata.state
    members = {n.id: n for n in node.membership.nodes()}
    if node_id not in members:
        raise NotFound(f"no node {node_id!r}")
    holds = state.idx.egroups_on.get(node_id) or state.idx.strips_on.get(node_id)
    if holds and node_id in state.up_nodes():
        raise Conflict(
            f"node {node_id} still holds data: drain it first (fabric node drain {node_id} --wait)"
        )
    # The membership record first: once Raft has removed the node, a request served by
    # that very node could no longer commit anything.
    nc = members[node_id]
    removed = MemberRecord(
        nc.id, nc.host, nc.port, nc.disks, dict(nc.labels), nc.disk_capacity, removed=True
    )
    result = await node.metadata.propose(SetMember(removed, node.clock.wall()))
    if not result.ok:
        raise from_code(result.code, result.message)
    await node.metadata.change_membership("remove", node_id)
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/nodes", post_node),
        web.post("/api/v1/nodes/{id}/promote", post_promote),
        web.post("/api/v1/nodes/{id}/rejoin", post_rejoin),
        web.delete("/api/v1/nodes/{id}", delete_node),
    ]
