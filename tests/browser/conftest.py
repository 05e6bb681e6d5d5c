"""What the browser tests share: a 3-node cluster per test module, one headless
chromium per module, logging in on the page, and screenshots in
``test-artifacts/console/``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from fabric.config import load_config
from tests.integration.conftest import Cluster, running_cluster

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
WAIT_S = 30


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path_factory, "browser")


def live_wait(browser: WebDriver, timeout_s: float = WAIT_S) -> WebDriverWait[WebDriver]:
    """A wait on a part of the page the live stream replaces: an element found just
    before a swap is stale when read, and is simply found again."""
    return WebDriverWait(browser, timeout_s, ignored_exceptions=(StaleElementReferenceException,))


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, (
        "chromium and chromium-driver are not installed: scripts/setup.sh --with-test-tools"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    b = webdriver.Chrome(service=Service(driver), options=options)
    yield b
    b.quit()


def base(cluster: Cluster, i: int = 0) -> str:
    return load_config(str(cluster.dir / "cluster.toml")).nodes[i].url


def shot(browser: WebDriver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SHOTS / f"{name}.png")), name


def log_in(browser: WebDriver, url: str, token: str) -> None:
    browser.get(url + "/")
    WebDriverWait(browser, WAIT_S).until(lambda b: "/login" in b.current_url)
    shot(browser, "login")
    browser.find_element(By.NAME, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_elements(By.ID, "summary"))
