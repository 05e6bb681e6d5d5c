"""Take the README's screenshot of the console's summary from a running cluster.

    fabric up                      # the default five nodes
    fabric container create demo --rf 2 && fabric vdisk create d --size 1G --container demo
    fabric vdisk write d some.img  # something for the charts to show; wait a minute
    .venv/bin/python scripts/console_screenshot.py docs/images/console-summary.png

It logs in with the cluster directory's admin token in Debian's headless chromium
(``scripts/setup.sh --with-test-tools`` installs it), waits for both charts to load, and
saves the whole summary page.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from fabric.config import load_config
from shell.launcher import resolve_dir

WAIT_S = 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--dir", help="the cluster directory (default: as fabric finds it)")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    cluster = Path(resolve_dir(args.dir))
    url = load_config(str(cluster / "cluster.toml")).nodes[0].url
    token = (cluster / "admin.token").read_text().strip()
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        print("chromium and chromium-driver are needed: scripts/setup.sh --with-test-tools")
        return 1
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--window-size={args.width},900",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        browser.get(url + "/login")
        browser.find_element(By.NAME, "token").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        WebDriverWait(browser, WAIT_S).until(
            lambda b: (
                b.execute_script(
                    "return [...document.querySelectorAll('[data-chart] img')]"
                    ".filter(i => i.complete && i.naturalWidth > 0).length"
                )
                == 2
            )
        )
        # The whole page, not just the window: chromium's own full-page capture.
        size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = browser.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.quit()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
