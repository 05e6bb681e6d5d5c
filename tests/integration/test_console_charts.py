"""The summary's charts on a real cluster: any node serves them as SVG images from the
leader's samples, they show the bytes a client writes, and they are as private as the
rest of the console."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from nodes.console.charts import CHARTS
from tests.integration.conftest import Cluster, running_cluster
from tests.integration.test_console import Browser, urls

DEADLINE_S = 40.0
"""Two of the leader's 10 s samples, with room for a loaded machine."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path_factory, "charts")


def summary_until(browser: Browser, wanted: str) -> str:
    """The summary page once it contains ``wanted`` (a regular expression)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        status, _, body = browser.request("/")
        assert status == 200
        if re.search(wanted, body):
            return body
        assert time.monotonic() < deadline, f"the summary never showed {wanted!r}:\n{body}"
        time.sleep(0.5)


def test_every_node_draws_the_leaders_charts(cluster: Cluster) -> None:
    for url in urls(cluster):
        browser = Browser(url)
        browser.log_in(cluster.token)
        body = summary_until(browser, r'src="/console/charts/throughput\.svg')
        for name, chart in CHARTS.items():
            src = re.search(rf'src="(/console/charts/{name}\.svg\?v=[^"]+)"', body)
            assert src, f"{url}: no {name} chart"
            status, headers, svg = browser.request(src.group(1).replace("&amp;", "&"))
            assert status == 200 and headers["Content-Type"] == "image/svg+xml", url
            assert svg.startswith("<?xml") and "<svg" in svg
            assert all(f">{line.label}<" in svg for line in chart.lines), (url, name)
        assert re.search(r'alt="Capacity, newest sample: disk used [0-9.]+ \w+', body)


def test_the_throughput_chart_shows_what_a_client_wrote(cluster: Cluster) -> None:
    cluster.fabric("container", "create", "charted", "--rf", "2")
    cluster.fabric("vdisk", "create", "cv", "--size", "64M", "--container", "charted")
    data = cluster.dir.parent / "charted.bin"
    data.write_bytes(bytes(range(256)) * (32 * 4096))  # 32 MiB
    cluster.fabric("vdisk", "write", "cv", str(data))
    browser = Browser(urls(cluster)[2])
    browser.log_in(cluster.token)
    # Every copy of the 32 MiB lands on some disk within one sample's window or two.
    body = summary_until(browser, r"written \(every copy, rebuilds\) [1-9][0-9.]* (KiB|MiB)/s")
    assert re.search(r"logical \(as written\) 32\.0 MiB", body), body


def test_a_chart_needs_a_session_and_an_unknown_one_is_not_found(cluster: Cluster) -> None:
    anonymous = Browser(urls(cluster)[0])
    status, headers, _ = anonymous.request("/console/charts/capacity.svg")
    assert status == 303 and headers["Location"].startswith("/login?next=")
    browser = Browser(urls(cluster)[0])
    browser.log_in(cluster.token)
    status, headers, body = browser.request("/console/charts/passwords.svg")
    assert status == 404 and headers["Content-Type"].startswith("text/html")
    assert "no chart &#39;passwords&#39;" in body
