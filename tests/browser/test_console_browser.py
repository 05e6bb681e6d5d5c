"""The console in a real browser: Debian's chromium, headless, driven by selenium.

A user logs in on the page with a token, walks every page (a screenshot of each lands
in ``test-artifacts/console/``, desktop and phone width), and watches the summary change
by itself, over server-sent events, when a node is killed: no reload, no click.
"""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import WAIT_S, base, live_wait, log_in, shot
from tests.integration.conftest import Cluster

PAGES = ("nodes", "containers", "vdisks", "images", "healing", "tasks", "faults", "events")


def test_a_user_logs_in_and_walks_every_page(cluster: Cluster, browser: WebDriver) -> None:
    log_in(browser, base(cluster), cluster.token)
    leader = cluster.status()["leader"]
    found = live_wait(browser).until(
        lambda b: b.find_element(By.CSS_SELECTOR, "[data-leader]").text
    )
    assert found == leader
    # The charts: SVG images the page's security policy lets in, drawn once the leader
    # has a sample (every 10 s), each one loaded and laid out by the browser.
    charts = live_wait(browser).until(lambda b: loaded_charts(b) or None)
    assert sorted(charts) == ["capacity", "throughput"]
    shot(browser, "summary")
    for page in PAGES:
        browser.get(f"{base(cluster)}/{page}")
        assert browser.find_element(By.TAG_NAME, "h1").text, page
        if page == "nodes":
            assert all(f">{n}<" in browser.page_source for n in ("n1", "n2", "n3"))
        shot(browser, page)
    browser.set_window_size(390, 900)  # a phone's width: nothing wider than the screen
    browser.get(base(cluster) + "/")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, f"the summary is {width} px wide at a phone's 390"
    shot(browser, "summary-phone")
    browser.set_window_size(1280, 900)


def loaded_charts(b: WebDriver) -> list[str]:
    """The charts whose image the browser has decoded (an image it refused is 0 wide)."""
    names: list[str] = b.execute_script(
        "return [...document.querySelectorAll('[data-chart] img')]"
        ".filter(i => i.complete && i.naturalWidth > 0)"
        ".map(i => i.closest('[data-chart]').dataset.chart)"
    )
    return names if len(names) == 2 else []


def changed(b: WebDriver) -> bool:
    text: str = b.find_element(By.ID, "summary").text
    return "DOWN" in text or "DEGRADED" in text


def test_the_summary_follows_a_node_kill_without_a_reload(
    cluster: Cluster, browser: WebDriver
) -> None:
    browser.get(base(cluster) + "/")
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_elements(By.ID, "summary"))
    assert 'data-nodes="3"' in browser.page_source
    assert not changed(browser), "a node is already not UP"
    browser.execute_script("window.fabricMark = 'same page'")
    # Neither the leader nor the node serving the page (n1): its stream must outlive it.
    victim = next(
        n["id"] for n in cluster.status()["nodes"] if n["role"] != "leader" and n["id"] != "n1"
    )
    cluster.fabric("fault", "inject", "node-kill", "--nodes", victim)
    live_wait(browser).until(changed)
    assert browser.execute_script("return window.fabricMark") == "same page", (
        "the page reloaded: the summary did not come over the stream"
    )
    shot(browser, "summary-node-down")
