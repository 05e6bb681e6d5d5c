"""``/api/v1/faults``: inject, list and clear faults on the cluster's real nodes.

The node that takes the request resolves the target (``fabric.faults.resolve``, from
its membership, its leader and the racks, with a seeded choice) and sends each acting
node its part as ``FaultControl`` straight to it (``HttpTransport.control``): never
through Raft, whose leader may be the node cut off, and outside the injected network
faults. Each node keeps its faults and clears them itself when their duration ends
(``nodes/faultinject.py``). Listing asks every member. The event log records each
injection and clearing (kind ``fault``), best effort: under a partition the record may
come late or be dropped, the fault is applied anyway.

A paused node cannot answer: the node that paused it keeps its process id (from the
answer sent just before it stopped) and resumes it with SIGCONT on ``node-resume``
or a clear, when it runs on the same host; ``fabric fault clear`` does the same from
the cluster directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
from typing import Any, Protocol

from aiohttp import web

from fabric import faults, limits
from fabric.errors import FabricError, NotFound, Unavailable
from fabric.faults import Fault
from fabric.ports import PeerUnreachable
from fabric.wire.messages import FaultControl, FaultState
from nodes.api import NODE, json_body
from nodes.faultinject import FaultAgent
from nodes.node import Node
from nodes.runtime import HttpTransport

log = logging.getLogger(__name__)


class ControlChannel(Protocol):
    """How fault control reaches another node: ``HttpTransport.control`` for real nodes
    (its own signed route, outside the injected faults); the simulator calls the agents."""

    async def control(self, peer: str, message: FaultControl, timeout_s: float) -> Any: ...


class FaultCoordinator:
    def __init__(self, node: Node, transport: ControlChannel, agent: FaultAgent) -> None:
        self.node = node
        self.transport = transport
        self.agent = agent
        self.paused: dict[str, dict[str, int]] = {}
        """Pause fault id -> node -> pid, for resuming from outside."""

    async def _control(self, peer: str, message: FaultControl) -> FaultState:
        if peer == self.node.id:
            return await self.agent.control(message)
        reply = await self.transport.control(peer, message, limits.FAULT_CONTROL_TIMEOUT_S)
        assert isinstance(reply, FaultState), "checked by the codec: a FaultControl reply"
        return reply

    async def _each(
        self, messages: dict[str, FaultControl]
    ) -> tuple[dict[str, FaultState], dict[str, str]]:
        """Send each node its message at once; the answers, and why the others failed."""
        peers = list(messages)
        results = await asyncio.gather(
            *(self._control(p, messages[p]) for p in peers), return_exceptions=True
        )
        answers: dict[str, FaultState] = {}
        failed: dict[str, str] = {}
        for peer, result in zip(peers, results, strict=True):
            if isinstance(result, FaultState):
                answers[peer] = result
            elif isinstance(result, PeerUnreachable | FabricError):
                failed[peer] = str(result)
            else:
                assert isinstance(result, BaseException)
                raise result
        return answers, failed

    def _members(self) -> list[str]:
        return sorted(n.id for n in self.node.membership.nodes())

    def _record(self, message: str, subject: str) -> None:
        """Best effort, in the background: the answer does not wait for a commit."""
        self.node.spawn(self.node.events.record("fault", subject, message), "fault-event")

    async def inject(self, body: dict[str, Any]) -> dict[str, Any]:
        request = faults.parse_request(body)
        nodes = self.node.membership.nodes()
        topo = faults.Topology(
            tuple(n.id for n in nodes),
            {n.id: n.labels.get("rack", "") for n in nodes},
            self.node.metadata.leader,
        )
        seed = body.get("seed")
        rng = self.node.rng if seed is None else random.Random(seed)
        plan = faults.resolve(request, topo, rng)
        now = self.node.clock.wall()
        until = None if request.duration_s is None else now + request.duration_s
        fault = Fault(
            faults.new_id(rng), request.kind, request.target, plan.nodes, request.params, now, until
        )
        self._record(f"injected {faults.describe(fault)}", fault.id)
        if request.kind == "node-resume":
            self._resume(plan.nodes)
        messages = {
            n: FaultControl("inject", dataclasses.replace(fault, peers=peers).to_text())
            for n, peers in plan.acts.items()
        }
        answers, failed = await self._each(messages)
        if failed and not answers and request.kind != "node-resume":
            raise Unavailable(f"no node took fault {fault.id}: {'; '.join(failed.values())}")
        if request.kind == "node-pause":
            self.paused[fault.id] = {n: a.pid for n, a in answers.items()}
        return {**fault.answer(), "unreachable": failed}

    def _resume(self, nodes: tuple[str, ...], fault_id: str = "") -> None:
        for fid, pids in list(self.paused.items()):
            if fault_id and fid != fault_id:
                continue
            for n, pid in list(pids.items()):
                if n in nodes or fault_id:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGCONT)
                    del pids[n]
            if not pids:
                del self.paused[fid]

    async def listing(self) -> dict[str, Any]:
        answers, failed = await self._each({p: FaultControl("list") for p in self._members()})
        found = faults.merge(
            [[faults.from_text(t) for t in a.faults] for _, a in sorted(answers.items())]
        )
        # The pauses this node made are active even though their nodes cannot say so.
        return {
            "faults": [f.answer() for f in found],
            "unreachable": failed,
            "wall_skew_s": {n: a.wall_skew_s for n, a in answers.items()},
            "paused": sorted({n for pids in self.paused.values() for n in pids}),
        }

    async def clear(self, fault_id: str = "") -> None:
        self._resume(tuple(self._members()), fault_id)
        answers, failed = await self._each(
            {p: FaultControl("clear", fault_id=fault_id) for p in self._members()}
        )
        if fault_id and not answers and all("no active fault" in why for why in failed.values()):
            raise NotFound(f"no active fault {fault_id}")
        what = f"fault {fault_id}" if fault_id else "every fault"
        missed = f" (unreachable: {', '.join(sorted(failed))})" if failed and not fault_id else ""
        self._record(f"cleared {what}{missed}", fault_id)


COORDINATOR = web.AppKey("fault_coordinator", FaultCoordinator)


def coordinator(request: web.Request) -> FaultCoordinator:
    """This node's fault coordinator (the API's and the console's fault panel)."""
    found = request.app.get(COORDINATOR)
    if found is None:
        raise Unavailable("this node takes no faults")
    return found


async def post_fault(request: web.Request) -> web.Response:
    body = await json_body(request)
    answer = await coordinator(request).inject(body)
    return web.json_response(answer, status=201)


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(await coordinator(request).listing())


async def delete_faults(request: web.Request) -> web.Response:
    await coordinator(request).clear()
    return web.Response(status=204)


async def delete_fault(request: web.Request) -> web.Response:
    await coordinator(request).clear(request.match_info["id"])
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/faults", post_fault),
        web.get("/api/v1/faults", get_faults),
        web.delete("/api/v1/faults", delete_faults),
        web.delete("/api/v1/faults/{id}", delete_fault),
    ]


def install(app: web.Application, transport: HttpTransport, agent: FaultAgent) -> None:
    app[COORDINATOR] = FaultCoordinator(app[NODE], transport, agent)
