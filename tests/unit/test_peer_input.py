"""A peer's forged message is refused before any handler sees it, counted, and writes nothing.

The serving side of the real transport runs in-process on loopback with a real
``StorageService`` over a ``FileDisk`` in a temporary directory, so "nothing written"
is checked on the file system itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fabric import ids, peerauth
from fabric.config import default_config_text, parse_config, sized_config
from fabric.consensus.types import AppendRequest, Entry, EntryKind, VoteRequest
from fabric.errors import BadRequest
from fabric.keys import ClusterKeys
from fabric.sim.disk import SimDisk
from fabric.wire.codec import encode, encode_parts
from fabric.wire.messages import (
    AppendExtents,
    ClusterViewRequest,
    NodeReport,
    ReadExtent,
    RepairExtent,
    StatEgroup,
)
from fabric.wire.refusals import Refusals
from nodes.metrics import Peers
from nodes.runtime import PARTS_HEADER, FileDisk, HttpTransport
from nodes.services.storage import StorageService
from scripts.benchkit import free_ports

KEYS = ClusterKeys(b"k" * 32)
TRAVERSALS = ["../x", "..", ".", "", "a/b", "/etc/passwd", "a\x00b", "eg-1\n", "x" * 500]


@dataclass
class Served:
    """n2's serving side: what reached its handlers, its transport, and its disk."""

    url: str
    signer: HttpTransport
    """n1's transport: it signs what the tests forge, as a node of the cluster would."""
    transport: HttpTransport
    calls: list[Any]
    one_way: list[Any]
    root: Path


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    ports = free_ports(2)
    base = sized_config(parse_config(default_config_text()), 2)
    cfg = replace(
        base, nodes=tuple(replace(n, port=p) for n, p in zip(base.nodes, ports, strict=True))
    )
    root = tmp_path / "n2" / "d0"
    storage = StorageService("n2", [FileDisk("d0", str(root))])
    await storage.open()
    calls: list[Any] = []
    one_way: list[Any] = []

    async def on_call(frm: str, message: Any) -> Any:
        calls.append(message)
        return await storage.handle(message)

    transport = HttpTransport("n2", cfg, KEYS)
    signer = HttpTransport("n1", cfg, KEYS)
    transport.serve(on_call, lambda frm, m: one_way.append(m))
    app = web.Application(client_max_size=1 << 30)
    app.add_routes(transport.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", ports[1]).start()
    try:
        yield Served(cfg.node("n2").url, signer, transport, calls, one_way, tmp_path)
    finally:
        await signer.close()
        await transport.close()
        await runner.cleanup()


async def post(served: Served, path: str, body: bytes, parts: str = "") -> tuple[int, str]:
    """The one place this file speaks raw HTTP to a node: as n1, authenticated, so what
    is refused is refused for its content."""
    digest = peerauth.body_digest(body)
    headers = served.signer.auth.sign("POST", path, time.time(), os.urandom(16), digest, parts)
    if parts:
        headers[PARTS_HEADER] = parts
    async with (
        aiohttp.ClientSession() as s,
        s.post(served.url + path, data=body, headers=headers) as resp,
    ):
        return resp.status, (await resp.read()).decode(errors="replace")


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("egid", TRAVERSALS)
async def test_a_forged_repair_with_a_traversal_id_is_refused_and_writes_nothing(
    served: Served, egid: str
) -> None:
    before = tree(served.root)
    status, text = await post(served, "/internal/v1/call", encode(RepairExtent(egid, 0, b"evil")))
    assert status == 400
    assert "not an extent-group id" in text
    assert served.calls == []
    assert tree(served.root) == before
    assert served.transport.refusals.by_reason["invalid"] == 1


@pytest.mark.parametrize("egid", TRAVERSALS)
async def test_a_forged_append_with_a_traversal_id_is_refused_and_writes_nothing(
    served: Served, egid: str
) -> None:
    before = tree(served.root)
    header, parts = encode_parts(AppendExtents(egid, (b"evil", b"bytes"), 0))
    layout = ",".join(map(str, (len(header), *map(len, parts))))
    status, text = await post(served, "/internal/v1/call", header + b"".join(parts), layout)
    assert status == 400 and "not an extent-group id" in text
    assert served.calls == []
    assert tree(served.root) == before


@pytest.mark.parametrize(
    "message, why",
    [
        (RepairExtent("eg-1", -1, b"x"), "outside an extent-group file"),
        (ReadExtent("eg-1", 0, -5), "a read of -5 bytes"),
        (ReadExtent("eg-1", 2**62, 1), "outside an extent-group file"),
        (AppendExtents("eg-1", (b"x",), -7), "outside an extent-group file"),
        (StatEgroup(42), "expected str"),  # type: ignore[arg-type]
        (NodeReport("n2", "DEGRADED", {"out_of_service_s": -3.0}), "a number of seconds"),
        (NodeReport("n2", "DEGRADED", {"out_of_service_s": "forever"}), "a number of seconds"),
        (NodeReport("n2", "UP", {"io": {"written_bytes": -1}}), "written_bytes"),
        (NodeReport("n2", "UP", {"io": {"read_bytes": 1.5}}), "an integer"),
        (NodeReport("n2", "UP", {"io": {"deleted": 1}}), "written_bytes and read_bytes"),
        (NodeReport("n2", "UP", {"io": [1, 2]}), "written_bytes and read_bytes"),
        (ClusterViewRequest(10**6), "trends 1000000 out of range"),
        (ClusterViewRequest(-1), "trends -1 out of range"),
    ],
)
async def test_out_of_range_fields_are_refused_with_the_reason(
    served: Served, message: Any, why: str
) -> None:
    status, text = await post(served, "/internal/v1/call", encode(message))
    assert status == 400 and why in text
    assert served.calls == []
    assert served.transport.refusals.total == 1


async def test_a_valid_call_still_reaches_the_storage(served: Served) -> None:
    status, _ = await post(served, "/internal/v1/call", encode(AppendExtents("eg-1", (b"ok",))))
    assert status == 200
    assert served.calls == [AppendExtents("eg-1", (b"ok",))]
    assert served.transport.refusals.total == 0


def _vote(frm: str = "n1", to: str = "n2", term: int = 3) -> VoteRequest:
    return VoteRequest(term, frm, to, 0, 0, pre_vote=False)


@pytest.mark.parametrize(
    "batch, reason",
    [
        ([_vote(), _vote(term=-1)], "invalid"),  # one bad message refuses the batch
        ([_vote(), _vote(frm="n3")], "invalid"),  # speaking for another node
        ([_vote(), _vote(to="n3")], "invalid"),  # meant for another node
        ([_vote(), 7], "envelope"),  # not a message at all
        ([_vote(), RepairExtent("eg-1", 0, b"x")], "envelope"),  # a call, sent one way
        (_vote(), "envelope"),  # not a batch
        ([_vote()] * 513, "envelope"),  # past MAX_RPC_BATCH_MESSAGES
        (
            [AppendRequest(3, "n1", "n2", 5, 1, (Entry(9, 1, EntryKind.COMMAND),), 0)],
            "invalid",  # entries do not follow prev_index
        ),
    ],
)
async def test_a_one_way_batch_with_one_bad_message_is_refused_whole(
    served: Served, batch: Any, reason: str
) -> None:
    status, _ = await post(served, "/internal/v1/messages", encode(batch))
    assert status == 400
    assert served.one_way == []
    assert served.transport.refusals.by_reason[reason] == 1


async def test_a_valid_batch_is_delivered(served: Served) -> None:
    status, _ = await post(served, "/internal/v1/messages", encode([_vote(), _vote(term=4)]))
    assert status == 204
    assert served.one_way == [_vote(), _vote(term=4)]


async def test_undecodable_bytes_are_counted_as_such(served: Served) -> None:
    status, _ = await post(served, "/internal/v1/call", b"\xc1garbage")
    assert status == 400
    assert served.transport.refusals.by_reason["undecodable"] == 1


def test_metrics_export_the_refusals_by_reason() -> None:
    refusals = Refusals()
    refusals.by_reason["invalid"] = 3
    transport = SimpleNamespace(refusals=refusals)
    runtime = SimpleNamespace(transport=SimpleNamespace(refused={}))
    node = SimpleNamespace(id="n2", transport=transport, runtime=runtime)
    family = next(f for f in Peers(node).collect() if f.name == "fabric_peer_messages_refused")  # type: ignore[arg-type]
    assert family.name == "fabric_peer_messages_refused"
    samples = {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert samples["invalid"] == 3 and samples["undecodable"] == 0


# --- the storage service and the disks check again, whoever calls ---------------------------
@pytest.mark.parametrize("egid", TRAVERSALS)
async def test_storage_refuses_a_traversal_id_from_any_caller(egid: str) -> None:
    disk = SimDisk("d0")
    storage = StorageService("n1", [disk])
    for message in (
        AppendExtents(egid, (b"evil",), 0),
        RepairExtent(egid, 0, b"evil"),
        ReadExtent(egid, 0, 1),
    ):
        with pytest.raises(ids.BadId):
            await storage.handle(message)
    assert disk.files() == []
    assert storage.faults == {} and storage.disk_state == {"d0": "UP"}


async def test_a_negative_range_is_a_bad_request_not_a_failed_disk() -> None:
    disk = SimDisk("d0")
    storage = StorageService("n1", [disk])
    await storage.handle(AppendExtents("eg-1", (b"good bytes",), 0))
    for message in (RepairExtent("eg-1", -4, b"evil"), ReadExtent("eg-1", -4, 2)):
        with pytest.raises(BadRequest):
            await storage.handle(message)
    assert disk.contents("eg-1.eg") == b"good bytes"
    assert storage.faults == {} and storage.disk_state == {"d0": "UP"}


@pytest.mark.parametrize("name", TRAVERSALS)
async def test_disks_refuse_a_name_that_is_not_one_plain_file(tmp_path: Path, name: str) -> None:
    root = tmp_path / "d0"
    for disk in (FileDisk("d0", str(root)), SimDisk("d0")):
        with pytest.raises(ids.BadId):
            await disk.write_atomic(name, b"evil")
        with pytest.raises(ids.BadId):
            await disk.append(name, b"evil")
    assert tree(tmp_path) == ["d0"]


def test_the_file_disk_check_survives_python_dash_o(tmp_path: Path) -> None:
    code = (
        "import sys; from fabric.ids import BadId; from nodes.runtime import FileDisk\n"
        f"d = FileDisk('d0', {str(tmp_path)!r})\n"
        "try:\n    d._path('../x')\nexcept BadId:\n    sys.exit(0)\nsys.exit(3)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-O", "-c", code], env=env, timeout=60)
    assert done.returncode == 0
