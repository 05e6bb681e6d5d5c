"""Image stories on a real cluster: upload, import from a flaky server, kill mid-upload."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fabric.config import load_config
from shell.client import ApiError, FabricClient
from tests.imagekit import make_mixed_raw, needs_qemu, qemu_img
from tests.integration.conftest import Cluster, free_ports

pytestmark = needs_qemu
MiB = 1 << 20


class FlakySource:
    """An HTTP server on loopback that serves one file, drops the first connection
    halfway, honours Range, and redirects /redir to the file."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.requests: list[str | None] = []
        self.port = free_ports(1)[0]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        rng = request.headers.get("Range")
        self.requests.append(rng)
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        resp = web.StreamResponse(status=206 if rng else 200)
        resp.content_length = len(self.data) - start
        if rng:
            resp.headers["Content-Range"] = f"bytes {start}-{len(self.data) - 1}/{len(self.data)}"
        await resp.prepare(request)
        if len(self.requests) == 1:
            await resp.write(self.data[: len(self.data) // 2])
            assert request.transport is not None
            request.transport.close()  # the connection drops midway
            return resp
        await resp.write(self.data[start:])
        await resp.write_eof()
        return resp

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/disk.img")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.add_routes([web.get("/disk.img", self._file), web.get("/redir", self._redirect)])
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> FlakySource:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Iterator[Cluster]:
    # The import sources below listen on loopback, which URL import refuses by default.
    c = make_cluster(3, import_allow=("127.0.0.1/32",))
    c.fabric("up", "--config", str(c.config))
    yield c


def urls(cluster: Cluster) -> list[str]:
    return [n.url for n in load_config(str(cluster.dir / "cluster.toml")).nodes]


def test_upload_list_download_bit_exact_and_resumable(cluster: Cluster, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    make_mixed_raw(raw, 20 * MiB + 4321, seed=8)
    img = tmp_path / "ubuntu.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", "-c", raw, img)
    out = cluster.fabric("image", "upload", str(img), "--name", "ubuntu")
    assert "upload ubuntu:" in out.stderr and "(100%)" in out.stderr  # plain progress lines
    image = json.loads(out.stdout)
    assert image["state"] == "ACTIVE" and image["source_format"] == "qcow2"
    assert image["source_sha256"] == hashlib.sha256(img.read_bytes()).hexdigest()
    listing = cluster.fabric("image", "list").stdout
    assert "ubuntu" in listing and "qcow2" in listing and "ACTIVE" in listing

    ref = tmp_path / "ref.raw"
    qemu_img("convert", "-O", "raw", img, ref)
    got = tmp_path / "got.raw"
    got.write_bytes(ref.read_bytes()[: 7 * MiB + 11])  # an interrupted earlier download
    cluster.fabric("image", "download", "ubuntu", "-o", str(got), "--resume")
    assert got.read_bytes() == ref.read_bytes()

    cluster.fabric("image", "delete", "ubuntu")
    assert "ubuntu" not in cluster.fabric("image", "list").stdout


def test_url_import_resumes_after_a_dropped_connection(cluster: Cluster, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    make_mixed_raw(raw, 12 * MiB, seed=9)
    vhdx = tmp_path / "win.vhdx"
    qemu_img("convert", "-f", "raw", "-O", "vhdx", raw, vhdx)
    data = vhdx.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with FlakySource(data) as src:
        out = cluster.fabric(
            "image",
            "import",
            f"http://127.0.0.1:{src.port}/redir",
            "--name",
            "win",
            "--checksum",
            f"sha256:{digest}",
        )
        image = json.loads(out.stdout)
        assert image["state"] == "ACTIVE" and image["source_format"] == "vhdx"
        assert image["source_sha256"] == digest and image["source_bytes"] == len(data)
        assert src.requests[0] is None and src.requests[1].startswith("bytes=")  # resumed

        # The same source with a wrong checksum: ERROR, and nothing readable.
        out = cluster.fabric(
            "image",
            "import",
            f"http://127.0.0.1:{src.port}/disk.img",
            "--name",
            "win2",
            "--checksum",
            "sha256:" + "1" * 64,
            check=False,
        )
    assert out.returncode == 1 and "sha256 of the source is" in out.stderr
    bad = json.loads(cluster.fabric("image", "show", "win2").stdout)
    assert bad["state"] == "ERROR"
    dl = cluster.fabric("image", "download", "win2", "-o", str(tmp_path / "x"), check=False)
    assert dl.returncode == 1 and "not ACTIVE" in dl.stderr
    ref = tmp_path / "ref.raw"
    qemu_img("convert", "-f", "vhdx", "-O", "raw", vhdx, ref)
    cluster.fabric("image", "download", "win", "-o", str(tmp_path / "win.raw"))
    assert (tmp_path / "win.raw").read_bytes() == ref.read_bytes()


def test_bad_requests_and_schemes_are_refused(cluster: Cluster) -> None:
    async def go() -> None:
        async with FabricClient(urls(cluster), token=cluster.token) as client:
            for body, status, fragment in [
                ({"name": "x", "source_url": "file:///etc/passwd"}, 400, "http(s) URL"),
                ({"name": "x", "source_url": "ftp://example/a.img"}, 400, "http(s) URL"),
                ({"name": "x", "checksum": {"type": "md5", "value": "0"}}, 400, "checksum"),
                ({"name": "bad name!"}, 400, "image name"),
                ({"name": "x", "container": "nope"}, 404, "no container"),
            ]:
                with pytest.raises(ApiError) as err:
                    await client.create_image(**body)
                assert err.value.status == status and fragment in err.value.message
            await client.create_image("dup")
            with pytest.raises(ApiError) as err:
                await client.create_image("dup")
            assert err.value.status == 409

    asyncio.run(go())


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_hostile_images_are_refused_with_bounded_memory(cluster: Cluster, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    make_mixed_raw(raw, 2 * MiB, seed=1)
    base = tmp_path / "base.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, base)
    hostile = []
    huge_l1 = bytearray(base.read_bytes())  # claims 16 TiB and a 32 MiB L1 table
    huge_l1[24:32] = struct.pack(">Q", 16 << 40)
    huge_l1[36:40] = struct.pack(">I", 4 << 20)
    hostile.append(("huge-l1", bytes(huge_l1), "l1"))
    vmdk = tmp_path / "d.vmdk"
    qemu_img("convert", "-f", "raw", "-O", "vmdk", raw, vmdk)
    big = bytearray(vmdk.read_bytes())
    big[12:20] = struct.pack("<Q", 1 << 45)  # capacity far beyond the limit
    hostile.append(("vmdk-capacity", bytes(big), "exceeds the limit"))
    hostile.append(("garbage", b"QFI\xfb" + os.urandom(4 * MiB), "qcow2"))
    view = cluster.status()
    leader = next(n for n in view["nodes"] if n["id"] == view["leader"])
    port = int(leader["address"].rsplit(":", 1)[1])
    peak = 0.0

    async def go() -> None:
        nonlocal peak
        async with FabricClient([f"http://127.0.0.1:{port}"], token=cluster.token) as client:
            for name, blob, fragment in hostile:
                image = await client.create_image(name)
                with pytest.raises(ApiError) as err:
                    await client.request("PUT", f"/api/v1/images/{image['id']}/file", data=blob)
                assert err.value.status == 422, (name, err.value)
                assert fragment in err.value.message.lower(), (name, err.value.message)
                peak = max(peak, _rss_mib(leader["pid"]))
                assert (await client.image(name))["state"] == "ERROR"

    asyncio.run(go())
    assert peak < 300, f"node RSS reached {peak:.0f} MiB"


def test_killing_the_node_serving_an_upload(cluster: Cluster, tmp_path: Path) -> None:
    view = cluster.status()
    victim = next(n for n in view["nodes"] if n["id"] != view["leader"])
    port = int(victim["address"].rsplit(":", 1)[1])
    chunk = os.urandom(MiB)
    sent = threading.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        for i in range(64):
            if i == 8:
                sent.set()
            yield chunk
            await asyncio.sleep(0.05)  # pacing the workload, not synchronising

    def killer() -> None:
        sent.wait(30)
        time.sleep(0.2)
        os.kill(victim["pid"], signal.SIGKILL)

    async def go() -> dict[str, Any]:
        async with FabricClient([f"http://127.0.0.1:{port}"], token=cluster.token) as client:
            image = await client.create_image("doomed")
            threading.Thread(target=killer, daemon=True).start()
            with pytest.raises(Exception):  # noqa: B017 - any transport error will do
                await client.request("PUT", f"/api/v1/images/{image['id']}/file", data=slow_body())
            return image

    asyncio.run(go())
    final = cluster.wait(lambda v: True, what="status")  # cluster still answers
    assert final["leader"] is not None

    def failed() -> bool:
        out = json.loads(cluster.fabric("image", "show", "doomed").stdout)
        return out["state"] == "ERROR"

    deadline = time.monotonic() + 30
    while not failed():
        assert time.monotonic() < deadline, "the half-uploaded image never turned ERROR"
        time.sleep(0.3)
    vdisks = json.loads(cluster.fabric("vdisk", "list", "--json").stdout)
    assert not [v for v in vdisks if v["name"].startswith("image-")]
    dl = cluster.fabric("image", "download", "doomed", "-o", str(tmp_path / "x"), check=False)
    assert dl.returncode == 1


def _human(n: int) -> str:
    from shell.cli import _human as human

    return human(n)


def test_a_failed_upload_never_blocks_its_name(cluster: Cluster, tmp_path: Path) -> None:
    """A wrong path creates nothing; content that breaks its declared format is a 422
    naming both formats; the retry under the same name just works."""
    out = cluster.fabric(
        "image", "upload", str(tmp_path / "missing.qcow2"), "--name", "vm", check=False
    )
    assert out.returncode == 2 and "No such file" in out.stderr, out.stderr
    assert json.loads(cluster.fabric("image", "list", "--json").stdout) == []

    raw = tmp_path / "disk.raw"
    make_mixed_raw(raw, 3 * MiB, seed=12)
    good = tmp_path / "vm.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, good)
    broken = tmp_path / "broken.qcow2"
    broken.write_bytes(b"QFI\x00" + good.read_bytes()[4:])  # the magic's last byte lost
    out = cluster.fabric(
        "image", "upload", str(broken), "--name", "vm", "--format", "qcow2", check=False
    )
    assert out.returncode == 1, out.stderr
    assert "declared source_format qcow2, but the content is raw" in out.stderr, out.stderr
    assert "(unprocessable" in out.stderr, out.stderr  # the 422's code
    assert json.loads(cluster.fabric("image", "show", "vm").stdout)["state"] == "ERROR"

    out = cluster.fabric("image", "upload", str(good), "--name", "vm", "--format", "qcow2")
    image = json.loads(out.stdout)
    assert image["state"] == "ACTIVE" and image["source_format"] == "qcow2"
    assert [i["name"] for i in json.loads(cluster.fabric("image", "list", "--json").stdout)] == [
        "vm"
    ]

    data = good.read_bytes()
    with FlakySource(data) as src:
        out = cluster.fabric(
            "image",
            "import",
            f"http://127.0.0.1:{src.port}/disk.img",
            "--name",
            "web",
            "--format",
            "qcow2",
        )
        assert json.loads(out.stdout)["state"] == "ACTIVE"
        last = out.stderr.strip().splitlines()[-1]
        assert last == f"import web: {_human(len(data))} of {_human(len(data))} (100%)"
        # Refused at its first bytes: the last progress line still tells the real size.
        out = cluster.fabric(
            "image",
            "import",
            f"http://127.0.0.1:{src.port}/disk.img",
            "--name",
            "web2",
            "--format",
            "vhdx",
            check=False,
        )
    assert (
        out.returncode == 1
        and "declared source_format vhdx, but the content is qcow2" in out.stderr
    )
    progress = [line for line in out.stderr.splitlines() if line.startswith("import web2:")]
    assert progress and f" of {_human(len(data))} (" in progress[-1], out.stderr
