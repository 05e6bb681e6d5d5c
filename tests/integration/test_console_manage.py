"""Managing the cluster from the console as from the CLI: vdisks created and deleted, a
container deleted once empty, a node drained and back, the rebuild and the scrub
retuned; each form with the role of the API call it makes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import Cluster, running_cluster
from tests.integration.test_console import Browser, token, urls

GiB = 1 << 30


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path_factory, "manage")


def listed(cluster: Cluster, what: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(cluster.fabric(what, "list", "--json").stdout)
    return found


def send(browser: Browser, path: str, form: dict[str, str]) -> str:
    """Post a form as the page does and return the page it leads to (with its message)."""
    status, headers, body = browser.request(path, form)
    assert status == 303, body
    return browser.request(headers["Location"])[2]


def test_an_operator_creates_and_deletes_a_vdisk_from_the_page(cluster: Cluster) -> None:
    cluster.fabric("container", "create", "pages", "--rf", "2")
    operator = Browser(urls(cluster)[1])
    operator.log_in(token(cluster, "operator"))
    page = send(operator, "/vdisks", {"name": "web-vd", "size": "3G", "container": "pages"})
    assert "vdisk web-vd created in pages" in page and 'data-vdisk="web-vd"' in page
    (vd,) = [v for v in listed(cluster, "vdisk") if v["name"] == "web-vd"]
    assert (vd["size"], vd["container"]) == (3 * GiB, "pages")

    page = send(operator, "/vdisks", {"name": "bad", "size": "three", "container": "pages"})
    assert "error: size: not a size: &#39;three&#39;" in page
    page = send(operator, "/vdisks", {"name": "web-vd", "size": "1G", "container": "pages"})
    assert "error:" in page and "already exists" in page
    assert [v["name"] for v in listed(cluster, "vdisk")].count("web-vd") == 1

    page = send(operator, "/vdisks/delete", {"id": vd["id"]})
    assert f"vdisk {vd['id']} deleted" in page and 'data-vdisk="web-vd"' not in page
    assert "web-vd" not in [v["name"] for v in listed(cluster, "vdisk")]


def test_a_container_is_deleted_from_the_page_only_once_empty(cluster: Cluster) -> None:
    cluster.fabric("container", "create", "full", "--rf", "2")
    cluster.fabric("vdisk", "create", "inside", "--size", "1G", "--container", "full")
    admin = Browser(urls(cluster)[0])
    admin.log_in(cluster.token)
    page = send(admin, "/containers/delete", {"name": "full"})
    assert "error:" in page and 'data-container="full"' in page
    assert "full" in [c["name"] for c in listed(cluster, "container")]

    cluster.fabric("vdisk", "delete", "inside")
    page = send(admin, "/containers/delete", {"name": "full"})
    assert "container full deleted" in page and 'data-container="full"' not in page
    assert "full" not in [c["name"] for c in listed(cluster, "container")]


def draining(cluster: Cluster, node: str) -> bool:
    (found,) = [n for n in cluster.status()["nodes"] if n["id"] == node]
    return bool(found["draining"])


def test_an_admin_drains_a_node_from_the_nodes_page_and_stops(cluster: Cluster) -> None:
    admin = Browser(urls(cluster)[0])
    admin.log_in(cluster.token)
    page = send(admin, "/nodes/drain", {"id": "n3"})
    assert "n3 draining:" in page and "DRAINING" in page and "Stop draining" in page
    assert draining(cluster, "n3")
    page = send(admin, "/nodes/drain", {"id": "n3", "undo": "on"})
    assert "n3 no longer draining" in page and "DRAINING" not in page
    assert not draining(cluster, "n3")
    page = send(admin, "/nodes/drain", {"id": "n9"})
    assert "error: no node &#39;n9&#39;" in page


def test_each_form_needs_the_role_of_its_api_call(cluster: Cluster) -> None:
    url = urls(cluster)[2]
    reader, operator = Browser(url), Browser(url)
    reader.log_in(token(cluster, "read-only"))
    operator.log_in(token(cluster, "operator"))
    status, _, body = reader.request("/vdisks")
    assert status == 200 and "cannot create or delete vdisks" in body
    status, _, body = reader.request("/vdisks", {"name": "no", "size": "1G", "container": "x"})
    assert status == 403 and "needs operator" in body
    # An operator writes data but does not retire nodes or containers, as with the API.
    status, _, body = operator.request("/nodes")
    assert status == 200 and "Drain" not in body
    for path, form in (("/nodes/drain", {"id": "n2"}), ("/containers/delete", {"name": "x"})):
        status, _, body = operator.request(path, form)
        assert status == 403 and "needs admin" in body, path
    assert not draining(cluster, "n2")


def settings(cluster: Cluster, what: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cluster.fabric(what, "--json").stdout)["settings"]
    return found


def test_an_admin_retunes_the_rebuild_and_the_scrub_as_the_cli_would(cluster: Cluster) -> None:
    admin = Browser(urls(cluster)[1])
    admin.log_in(cluster.token)
    before = settings(cluster, "rebuild")
    page = send(admin, "/healing/rebuild", {"rate": "200MB/s", "delay": "2m", "per_node": ""})
    assert "rebuild settings: bytes_per_s=200000000" in page, page
    after = settings(cluster, "rebuild")
    assert (after["bytes_per_s"], after["delay_s"]) == (200_000_000, 120.0)
    assert after["per_node"] == before["per_node"]  # an empty field stays as it was

    # Read as the CLI reads its options, then held to the API's own bounds.
    page = send(admin, "/healing/rebuild", {"rate": "fast"})
    assert "error: rate: not a rate: &#39;fast&#39;" in page
    page = send(admin, "/healing/rebuild", {"delay": "30d"})  # the API allows 7 days
    assert "error:" in page and "delay_s" in page, page
    assert settings(cluster, "rebuild") == after

    page = send(admin, "/healing/scrub", {"cycle": "12h", "now": "on"})
    assert "a scrub pass starts now on every node; scrub settings:" in page
    assert "cycle_s=43200.0" in page and settings(cluster, "scrub")["cycle_s"] == 43200.0
    events = cluster.fabric("events", "--json").stdout
    assert "a scrub pass now on every node" in events

    operator = Browser(urls(cluster)[1])
    operator.log_in(token(cluster, "operator"))
    status, _, body = operator.request("/healing")
    assert status == 200 and "cannot change the rebuild" in body
    status, _, body = operator.request("/healing/scrub", {"now": "on"})
    assert status == 403 and "needs admin" in body
