"""The console's images page and fault panel without a browser's script: a plain
multipart form uploads a qcow2 that ends ACTIVE and downloads as ``qemu-img convert``'s
raw; the role each form needs is the API's; a form from another site changes nothing."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.imagekit import make_mixed_raw, needs_qemu, qemu_img
from tests.integration.conftest import Cluster, write_config
from tests.integration.test_console import Browser, token, urls

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("console-images")
    # The import below reads from loopback, which URL import refuses by default.
    config = write_config(root / "cluster.toml", 3, import_allow=("127.0.0.1/32",))
    c = Cluster(root / "data", config)
    c.fabric("up", "--config", str(c.config))
    yield c
    c.fabric("down", check=False)


def multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    """A form as a browser sends it: the text fields, then the file."""
    boundary = "----fabric" + secrets.token_hex(8)
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    out += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    out += content + f"\r\n--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def download(browser: Browser, path: str) -> tuple[dict[str, str], bytes]:
    cookie = f"fabric_session={browser.cookies['fabric_session']}"
    req = urllib.request.Request(browser.url + path, headers={"Cookie": cookie})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return dict(resp.headers), resp.read()


def images(cluster: Cluster) -> dict[str, dict[str, object]]:
    found = json.loads(cluster.fabric("image", "list", "--json").stdout)
    return {i["name"]: i for i in found}


def faults(cluster: Cluster) -> list[dict[str, object]]:
    found: list[dict[str, object]] = json.loads(cluster.fabric("fault", "list", "--json").stdout)
    return found


@needs_qemu
def test_a_plain_form_uploads_a_qcow2_that_ends_active_and_downloads_as_raw(
    cluster: Cluster, tmp_path: Path
) -> None:
    raw = tmp_path / "disk.raw"
    make_mixed_raw(raw, 3 * MIB + 4096)
    qcow2 = tmp_path / "disk.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
    browser = Browser(urls(cluster)[1])
    browser.log_in(cluster.token)
    form = multipart(
        {"name": "", "source_format": "", "container": ""}, "web.qcow2", qcow2.read_bytes()
    )
    status, headers, _ = browser.request("/images", multipart=form)
    assert (status, headers["Location"]) == (303, "/images")
    _, _, page = browser.request("/images")
    assert "image web.qcow2 is ACTIVE" in page  # named after the file, as none was given
    image = images(cluster)["web.qcow2"]
    assert (image["state"], image["source_format"]) == ("ACTIVE", "qcow2")
    assert re.search(r'data-image="web.qcow2">.*?ACTIVE', page, re.S)
    assert f'href="/images/{image["id"]}/download"' in page

    headers, body = download(browser, f"/images/{image['id']}/download")
    assert headers["Content-Disposition"] == 'attachment; filename="web.qcow2.raw"'
    converted = tmp_path / "converted.raw"
    qemu_img("convert", "-O", "raw", qcow2, converted)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(converted.read_bytes()).hexdigest()

    status, headers, _ = browser.request("/images/delete", {"id": str(image["id"])})
    assert (status, headers["Location"]) == (303, "/images")
    assert "web.qcow2" not in images(cluster)


class HeldSource(BaseHTTPRequestHandler):
    """Serves ``data``: the first half at once, the rest once ``go`` is set."""

    data: ClassVar[bytes] = b""
    go: ClassVar[threading.Event] = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        half = len(self.data) // 2
        self.wfile.write(self.data[:half])
        self.wfile.flush()
        self.go.wait(60)
        self.wfile.write(self.data[half:])

    def log_message(self, *args: object) -> None:
        pass


@needs_qemu
def test_an_import_from_the_form_shows_its_task_live_until_active(
    cluster: Cluster, tmp_path: Path
) -> None:
    raw = tmp_path / "disk.raw"
    make_mixed_raw(raw, 4 * MIB, seed=3)
    HeldSource.data = raw.read_bytes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), HeldSource)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser = Browser(urls(cluster)[0])
        browser.log_in(cluster.token)
        url = f"http://127.0.0.1:{server.server_address[1]}/disk.raw"
        status, headers, _ = browser.request("/images/import", {"url": url, "name": "pulled"})
        assert (status, headers["Location"]) == (303, "/tasks")
        deadline = time.monotonic() + 30
        while "of 4.0 MiB" not in (page := browser.request("/tasks")[2]):
            assert time.monotonic() < deadline, page
            time.sleep(0.2)  # a poll's pace, not a synchronisation: the loop waits
        # While the task runs the page follows it (htmx), or reloads itself without script.
        assert 'hx-trigger="every 1s"' in page and 'http-equiv="refresh"' in page
        assert "RUNNING" in page
        HeldSource.go.set()
        while images(cluster)["pulled"]["state"] != "ACTIVE":
            assert time.monotonic() < deadline + 30, images(cluster)["pulled"]
            time.sleep(0.2)
        page = browser.request("/tasks")[2]
        assert "SUCCEEDED" in page and "hx-trigger" not in page  # done: no more polling
    finally:
        HeldSource.go.set()
        server.shutdown()


def test_image_forms_need_operator_and_fault_forms_admin(cluster: Cluster) -> None:
    url = urls(cluster)[0]
    reader, operator, admin = Browser(url), Browser(url), Browser(url)
    reader.log_in(token(cluster, "read-only"))
    operator.log_in(token(cluster, "operator"))
    admin.log_in(cluster.token)
    form = multipart({"name": "denied"}, "x.raw", bytes(4096))
    status, _, body = reader.request("/images", multipart=form)
    assert status == 403 and "needs operator" in body
    assert "cannot upload" in reader.request("/images")[2]
    status, _, body = reader.request("/images/import", {"url": "http://127.0.0.1:9/x", "name": "x"})
    assert status == 403 and "needs operator" in body

    status, _, _ = operator.request(
        "/images", multipart=multipart({"name": "byop"}, "x.raw", bytes(4096))
    )
    assert status == 303 and images(cluster)["byop"]["state"] == "ACTIVE"
    status, _, body = reader.request("/images/delete", {"id": "byop"})
    assert status == 403 and "byop" in images(cluster)

    # An operator sees the panel, but injecting or clearing is the API's admin's.
    status, _, body = operator.request("/faults")
    assert status == 200 and "cannot inject" in body
    for path, form_ in (
        ("/faults", {"kind": "net-delay", "nodes": "n3", "params": "ms=5"}),
        ("/faults/clear", {}),
    ):
        status, _, body = operator.request(path, form_)
        assert status == 403 and "needs admin" in body
    assert faults(cluster) == []

    status, headers, _ = admin.request(
        "/faults", {"kind": "net-delay", "nodes": "n3", "params": "ms=5", "duration": "120"}
    )
    assert (status, headers["Location"]) == (303, "/faults")
    [fault] = faults(cluster)
    assert (fault["kind"], fault["nodes"], fault["params"]["ms"]) == ("net-delay", ["n3"], 5.0)
    _, _, body = admin.request("/faults")
    assert f'data-fault="{fault["id"]}"' in body and "ms=5.0" in body
    admin.request("/faults/clear", {"id": str(fault["id"])})
    assert faults(cluster) == []
    # A refusal of the service is the page's message.
    admin.request("/faults", {"kind": "net-delay", "nodes": "n3"})
    assert "error: net-delay" in admin.request("/faults")[2]


@pytest.mark.parametrize("origin", ["http://127.0.0.2:1", ""])
def test_image_and_fault_forms_from_another_site_change_nothing(
    cluster: Cluster, origin: str
) -> None:
    browser = Browser(urls(cluster)[2])
    browser.log_in(cluster.token)
    browser.request("/images", multipart=multipart({"name": "keep"}, "k.raw", bytes(4096)))
    assert images(cluster)["keep"]["state"] == "ACTIVE"
    sent = (
        ("/images", None, multipart({"name": "csrf"}, "c.raw", bytes(4096))),
        ("/images/delete", {"id": "keep"}, None),
        ("/images/import", {"url": "http://127.0.0.1:9/x", "name": "csrf"}, None),
        ("/faults", {"kind": "net-delay", "nodes": "n2", "params": "ms=5"}, None),
    )
    for path, form, body in sent:
        status, _, page = browser.request(path, form, origin=origin, multipart=body)
        assert status == 403 and "cross-site" in page, path
    found = images(cluster)
    assert "keep" in found and "csrf" not in found
    assert faults(cluster) == []
    browser.request("/images/delete", {"id": "keep"})
