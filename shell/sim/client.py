"""An in-process client of a simulated cluster: the ``ClusterApi`` the experiment's
workloads, sampler and fault applier use, answered by the simulated nodes' own services.

Each request runs as a task of the node it is sent to (``Node.spawn``), so a crash of
that node ends it as it would end a real request: the client sees the connection break.
It calls what the route's handler calls (``nodes/api*.py``: the kv and event answers are
the same functions) and turns errors into what ``FabricClient`` raises: a
``FabricError`` is an ``ApiError`` with its status, any other exception a 500
``internal`` (as the node's error middleware answers it), a node that is not running
refuses the connection (``Unreachable``, nothing sent), and a request cut off by a crash
or by the client's timeout may have been applied (``Unreachable(maybe_sent=True)``, or
``InDoubt`` for a request that is not safe to repeat). Like ``FabricClient``, a client
that knows several nodes tries them in order and moves one that failed to the back.

Faults toward clients (``"to": "clients"``) act as ``nodes.faultinject.client_faults``
does: partition, reset and loss refuse the request, delay delays it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar
from urllib.parse import parse_qs, urlsplit

from fabric.errors import Conflict, FabricError
from fabric.extents.policy import policy_from_request
from fabric.faults import CLIENTS
from fabric.metadata.records import to_json
from fabric.ports import PeerUnreachable
from fabric.sim.http import SimSource
from nodes.api import STATUS_PATHS, kv_read, kv_write
from nodes.api_faults import FaultCoordinator
from nodes.api_healing import events_answer, rebuild_answer
from nodes.metrics import exposition, node_registry
from nodes.node import Node
from nodes.openapi import operation
from nodes.schemas import check
from nodes.services.accounting import container_views
from nodes.simcluster import SimCluster
from shell.client import STREAM_CHUNK_BYTES, ApiError, BrokenStream, InDoubt, Unreachable

T = TypeVar("T")

IMPORT_BASE_URL = "http://127.0.0.1:8000"
"""Where the experiment's image imports read from: ``/img/NAME`` and
``/flaky/NAME?drop=P`` (``shell.experiment.flaky``), served by ``SimHttp``."""


CLIENT_HOP_S = 0.0005
"""Virtual time a request takes to reach a node, and its answer to come back: a loopback
HTTP exchange's order of magnitude, so a closed-loop client never spins at one instant."""


class SimControl:
    """Fault control between simulated nodes: straight to the peer's agent, outside the
    network and its faults (as the real control route is)."""

    def __init__(self, sim: SimCluster) -> None:
        self.sim = sim

    async def control(self, peer: str, message: Any, timeout_s: float) -> Any:
        agent = self.sim.agents.get(peer)
        if agent is None:
            raise PeerUnreachable(peer, "not running")
        return await agent.control(message)


@dataclass
class Plane:
    """What every client of one simulated run shares: the cluster, the fault
    coordinator of each running node, the import sources and their counts."""

    sim: SimCluster
    workdir: str
    flaky_rng: Any
    """``random.Random`` deciding where flaky sources break (seeded by the run)."""
    source_stats: dict[str, int] = field(
        default_factory=lambda: {"responses": 0, "broken": 0, "resumed": 0}
    )
    _coordinators: dict[str, tuple[Node, FaultCoordinator]] = field(default_factory=dict)

    def coordinator(self, node: Node) -> FaultCoordinator:
        known = self._coordinators.get(node.id)
        if known is None or known[0] is not node:  # a restarted node has a new agent
            agent = self.sim.agents[node.id]
            known = (node, FaultCoordinator(node, SimControl(self.sim), agent))
            self._coordinators[node.id] = known
        return known[1]

    def serve_import(self, url: str) -> None:
        """Make ``url`` (under ``IMPORT_BASE_URL``) a simulated source of its file."""
        parts = urlsplit(url)
        kind, _, name = parts.path.lstrip("/").partition("/")
        if kind not in ("img", "flaky") or "/" in name or name.startswith("."):
            return  # not ours: the import fails to connect, as it would
        with open(os.path.join(self.workdir, name), "rb") as f:
            data = f.read()
        drop = float(parse_qs(parts.query).get("drop", ["0"])[0]) if kind == "flaky" else 0.0
        self.sim.http.serve(url, SimSource(data, drop_for=self._dropper(drop)))

    def _dropper(self, probability: float) -> Callable[[int, int], int | None]:
        stats, rng = self.source_stats, self.flaky_rng

        def drop_for(offset: int, length: int) -> int | None:
            # As shell.experiment.flaky decides: at least one byte gets through.
            cut = 1 + rng.randrange(length) if length > 1 and rng.random() < probability else None
            stats["responses"] += 1
            stats["resumed"] += 1 if offset else 0
            stats["broken"] += 0 if cut is None else 1
            return cut

        return drop_for


class SimClient:
    """A ``ClusterApi`` over the simulated nodes ``node_ids`` (tried in that order)."""

    def __init__(self, plane: Plane, node_ids: list[str], timeout_s: float) -> None:
        assert node_ids, "a client needs at least one node"
        self.plane = plane
        self.order = list(node_ids)
        self.timeout_s = timeout_s

    # --- moving on from a node that cannot serve --------------------------------------------
    async def _each_node(
        self,
        call: Callable[[Node], Awaitable[T]],
        repeatable: bool = True,
        path: str = "",
    ) -> T:
        errors: list[str] = []
        maybe_sent = False
        for node_id in list(self.order):
            node = self.plane.sim.nodes.get(node_id)
            if node is None:
                # A refused connection costs a round trip too: a client that finds every
                # node down must not spin at one instant of virtual time.
                await self.plane.sim.clock.sleep(2 * CLIENT_HOP_S)
                errors.append(f"{node_id}: connection refused (not running)")
                self._demote(node_id)
                continue
            try:
                await self._client_faults(node, path)
            except _Refused as exc:
                errors.append(f"{node_id}: {exc}")
                maybe_sent = True
                self._demote(node_id)
                continue
            await node.clock.sleep(CLIENT_HOP_S)
            if self.plane.sim.nodes.get(node_id) is not node:
                errors.append(f"{node_id}: connection refused (not running)")
                self._demote(node_id)
                continue
            task = node.spawn(_serve(node, call, path in STATUS_PATHS), "api")
            done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
            if task in done and not task.cancelled():
                await node.clock.sleep(CLIENT_HOP_S)
                outcome, value = task.result()
                if outcome == "ok":
                    return value  # type: ignore[no-any-return]
                raise value
            why = "timed out" if not done else "connection closed (the node crashed)"
            if not repeatable:
                raise InDoubt(f"{node_id}: {why} after the request was sent")
            errors.append(f"{node_id}: {why}")
            maybe_sent = True
            self._demote(node_id)
        raise Unreachable("no node answered: " + "; ".join(errors), maybe_sent)

    async def _client_faults(self, node: Node, path: str) -> None:
        agent = self.plane.sim.agents.get(node.id)
        if agent is None or not agent.net.rules or path.startswith("/api/v1/faults"):
            return
        for f in agent.net.toward(CLIENTS):
            if f.kind in ("net-partition", "net-reset") or (
                f.kind == "net-loss" and agent.net.rng.random() < f.params["probability"]
            ):
                raise _Refused(f"connection reset ({f.kind}, injected fault {f.id})")
            if f.kind == "net-delay":
                await node.clock.sleep(agent.net.delay_s(f))

    def pass_over_first(self) -> None:
        self._demote(self.order[0])

    def _demote(self, node_id: str) -> None:
        self.order.remove(node_id)
        self.order.append(node_id)

    # --- cluster and healing ----------------------------------------------------------------
    async def cluster(self) -> dict[str, Any]:
        return await self._each_node(lambda n: n.cluster_view(), path="/api/v1/cluster")

    async def rebuild(self, **settings: Any) -> dict[str, Any]:
        assert not settings, "the simulated client only reads rebuild progress"
        return await self._each_node(rebuild_answer)

    async def metrics_text(self, names: Sequence[str] = ()) -> str:
        async def scrape(node: Node) -> str:
            return exposition(node_registry(node), names).decode()

        return await self._each_node(scrape, path="/metrics")

    async def events(
        self, since: int | None = None, limit: int | None = None, kind: str | None = None
    ) -> dict[str, Any]:
        params = {
            k: v for k, v in (("since", since), ("limit", limit), ("kind", kind)) if v is not None
        }
        return await self._each_node(lambda n: events_answer(n, params))

    async def inject_fault(
        self,
        kind: str,
        target: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        duration_s: float | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "params": params or {}, "duration_s": duration_s}
        if target is not None:
            body["target"] = target
        if seed is not None:
            body["seed"] = seed
        check(operation("POST", "/api/v1/faults").body or {}, body)
        return await self._each_node(
            lambda n: self.plane.coordinator(n).inject(body), False, "/api/v1/faults"
        )

    async def clear_faults(self, id: str | None = None) -> None:
        await self._each_node(lambda n: self.plane.coordinator(n).clear(id or ""))

    # --- metadata key space -----------------------------------------------------------------
    async def kv_get(self, key: str) -> dict[str, Any]:
        return await self._each_node(lambda n: kv_read(n, key))

    async def kv_put(self, key: str, value: Any, expect_version: int | None = None) -> int:
        body: dict[str, Any] = {"value": value}
        if expect_version is not None:
            body["expect_version"] = expect_version
        answer = await self._each_node(lambda n: kv_write(n, key, body))
        return int(answer["version"])

    # --- containers and vdisks --------------------------------------------------------------
    async def create_container(self, name: str, **policy: Any) -> dict[str, Any]:
        body = {"name": name, **{k: v for k, v in policy.items() if v is not None}}
        check(operation("POST", "/api/v1/containers").body or {}, body)

        async def create(node: Node) -> dict[str, Any]:
            await node.catalog.create_container(name, policy_from_request(body))
            return next(v for v in container_views(node.metadata.state) if v["name"] == name)

        return await self._each_node(create, False)

    async def create_vdisk(self, name: str, container: str, size: int) -> dict[str, Any]:
        async def create(node: Node) -> dict[str, Any]:
            return to_json(await node.catalog.create_vdisk(name, container, size))

        return await self._each_node(create, False)

    async def write_vdisk_bytes(self, ref: str, data: bytes, offset: int = 0) -> int:
        async def write(node: Node) -> int:
            extent = node.config.extent_bytes
            written: int = await node.writer.write(
                ref, offset, len(data), _cut(data, offset, extent)
            )
            return written

        return await self._each_node(write)

    async def read_vdisk_bytes(self, ref: str, offset: int = 0, length: int | None = None) -> bytes:
        async def read(node: Node) -> bytes:
            vd = await node.catalog.get_vdisk(ref)
            _, _, stream = await node.reader.read(vd.id, offset, length)
            return await _gather(stream)

        return await self._each_node(read)

    # --- images -----------------------------------------------------------------------------
    async def create_image(self, name: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, **{k: v for k, v in fields.items() if v is not None}}
        check(operation("POST", "/api/v1/images").body or {}, body)
        if "source_url" in body:
            self.plane.serve_import(body["source_url"])
        return await self._each_node(lambda n: n.images.create(body), False)

    async def image(self, ref: str) -> dict[str, Any]:
        return await self._each_node(lambda n: n.images.get(ref))

    async def task(self, task_id: str) -> dict[str, Any]:
        return await self._each_node(lambda n: n.images.task(task_id))

    async def upload_image(self, ref: str, path: str) -> dict[str, Any]:
        with open(path, "rb") as f:
            data = f.read()
        return await self._each_node(lambda n: n.images.upload(ref, _pieces(data)), False)

    async def download_image(self, ref: str, out: BinaryIO) -> int:
        async def download(node: Node) -> bytes:
            image = await node.images.get(ref)
            if image["state"] != "ACTIVE":
                raise Conflict(f"image {image['name']!r} is {image['state']}, not ACTIVE")
            record = node.images.image(image["id"])
            assert record.vdisk_id is not None and record.virtual_size is not None, "ACTIVE"
            _, _, stream = await node.reader.read(record.vdisk_id, 0, record.virtual_size)
            return await _gather(stream)

        data = await self._each_node(download)
        out.write(data)
        return len(data)


class _Refused(Exception):
    """A fault toward clients refused the request."""


async def _serve(
    node: Node, call: Callable[[Node], Awaitable[T]], status_path: bool
) -> tuple[str, Any]:
    """Run one request on ``node`` as its error middleware would: never raises."""
    try:
        if not status_path:
            node.check_in_service()
        return "ok", await call(node)
    except FabricError as exc:
        return "error", ApiError(exc.status, exc.code, exc.message)
    except BrokenStream as exc:
        return "error", exc
    except Exception as exc:  # a node's 500: the request's outcome is unknown
        return "error", ApiError(500, "internal", f"internal error: {exc!r}"[:300])


async def _cut(data: bytes, offset: int, extent: int) -> AsyncIterator[bytes]:
    """The body in pieces cut at extent boundaries, as the vdisk write route reads it."""
    pos = 0
    while pos < len(data):
        want = min(extent - (offset + pos) % extent, len(data) - pos)
        yield data[pos : pos + want]
        pos += want


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), STREAM_CHUNK_BYTES):
        yield data[start : start + STREAM_CHUNK_BYTES]


async def _gather(stream: AsyncIterator[bytes]) -> bytes:
    """A whole streamed answer; a stream that fails part way is a ``BrokenStream``."""
    chunks: list[bytes] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
    except Exception as exc:  # the headers are out: the node can only close the connection
        got = sum(len(c) for c in chunks)
        raise BrokenStream(f"connection closed after {got} bytes: {exc}") from exc
    return b"".join(chunks)
