"""The images page and the fault panel in a real browser: upload a qcow2 from the page
and watch the bar reach its end and the image turn ACTIVE, download it through the
page's link and find ``qemu-img convert -O raw``'s bytes; kill a node from the panel and
watch the summary go DEGRADED, then whole again; pause one, clear it from the panel."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.conftest import WAIT_S, base, live_wait, log_in, shot
from tests.imagekit import make_mixed_raw, needs_qemu, qemu_img
from tests.integration.conftest import Cluster

MIB = 1024 * 1024


def fresh_session(browser: WebDriver, url: str, token: str) -> None:
    """Log in on the page whatever the test before left (the browser is the module's)."""
    browser.get(url + "/static/console.css")  # cookies are set per site: be on it
    browser.delete_all_cookies()
    log_in(browser, url, token)


def health(b: WebDriver) -> str:
    found: str = b.find_element(By.CSS_SELECTOR, "[data-health]").text
    return found


def flash(b: WebDriver) -> str:
    found: str = b.find_element(By.CSS_SELECTOR, ".flash").text
    return found


@needs_qemu
def test_a_qcow2_uploaded_from_the_page_downloads_as_its_raw_conversion(
    cluster: Cluster, browser: WebDriver, tmp_path: Path
) -> None:
    raw, qcow2 = tmp_path / "disk.raw", tmp_path / "page.qcow2"
    make_mixed_raw(raw, 6 * MIB + 512)
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
    fresh_session(browser, base(cluster), cluster.token)
    browser.get(base(cluster) + "/images")
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-image="frompage"]')
    browser.execute_script("window.sameDocument = true")  # a reload would forget it
    browser.find_element(By.ID, "up-name").send_keys("frompage")
    browser.find_element(By.ID, "up-file").send_keys(str(qcow2))
    browser.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").click()
    status = browser.find_element(By.ID, "upload-status")
    WebDriverWait(browser, WAIT_S).until(
        lambda _: status.get_attribute("data-state") in ("ACTIVE", "ERROR")
    )
    assert status.text == "frompage is ACTIVE"
    bar = browser.find_element(By.ID, "upload-progress")
    sent, total = (float(bar.get_attribute(a) or 0) for a in ("value", "max"))
    assert sent == total >= qcow2.stat().st_size, (sent, total)  # the form's whole body
    # The table above shows the new image too, in the same document: no reload.
    live_wait(browser).until(
        lambda b: any(
            row.find_element(By.CSS_SELECTOR, "[data-state]").text == "ACTIVE"
            for row in b.find_elements(By.CSS_SELECTOR, '[data-image="frompage"]')
        )
    )
    assert browser.execute_script("return window.sameDocument") is True
    shot(browser, "images-uploaded")

    browser.get(base(cluster) + "/images")
    row = browser.find_element(By.CSS_SELECTOR, '[data-image="frompage"]')
    assert row.find_element(By.CSS_SELECTOR, "[data-state]").text == "ACTIVE"
    assert "qcow2" in row.text
    shot(browser, "images-active")
    link = row.find_element(By.LINK_TEXT, "Download").get_attribute("href")
    assert link
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())
    req = urllib.request.Request(link, headers={"Cookie": cookie})
    with urllib.request.urlopen(req, timeout=60) as resp:
        got = hashlib.sha256(resp.read()).hexdigest()
    converted = tmp_path / "converted.raw"
    qemu_img("convert", "-O", "raw", qcow2, converted)
    assert got == hashlib.sha256(converted.read_bytes()).hexdigest()

    browser.set_window_size(390, 900)
    for page in ("images", "faults"):
        browser.get(f"{base(cluster)}/{page}")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"{page} is {width} px wide at a phone's 390"
        shot(browser, f"{page}-phone")
    browser.set_window_size(1280, 900)


def inject(browser: WebDriver, url: str, kind: str, node: str) -> None:
    browser.get(url + "/faults")
    Select(browser.find_element(By.ID, "kind")).select_by_visible_text(kind)
    browser.find_element(By.ID, "nodes").send_keys(node)
    browser.find_element(By.CSS_SELECTOR, "form[action='/faults'] button").click()
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".flash"))
    assert f"{kind} on {node}" in flash(browser)


def watch_health(browser: WebDriver, url: str, want: tuple[str, ...]) -> None:
    browser.get(url + "/")
    live_wait(browser, WAIT_S * 2).until(lambda b: health(b) in want)


def test_a_node_killed_from_the_panel_goes_down_and_a_pause_clears(
    cluster: Cluster, browser: WebDriver
) -> None:
    url = base(cluster)  # n1: never the victim, so the page stays up
    fresh_session(browser, url, cluster.token)
    victim = next(n["id"] for n in cluster.status()["nodes"] if n["id"] != "n1")
    inject(browser, url, "node-kill", victim)
    shot(browser, "faults-node-killed")
    watch_health(browser, url, ("DEGRADED", "DOWN"))
    shot(browser, "summary-after-kill")
    cluster.fabric("up", "--config", str(cluster.config))  # a killed node is started again
    watch_health(browser, url, ("UP",))

    inject(browser, url, "node-pause", victim)
    browser.get(url + "/faults")
    assert victim in browser.find_element(By.TAG_NAME, "main").text
    shot(browser, "faults-paused")
    watch_health(browser, url, ("DEGRADED", "DOWN"))
    browser.get(url + "/faults")
    browser.find_element(By.ID, "clear-all").click()
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".flash"))
    assert flash(browser) == "cleared every fault"
    watch_health(browser, url, ("UP",))
    shot(browser, "summary-healed")
