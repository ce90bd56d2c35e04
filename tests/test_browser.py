"""End-to-end: headless Chromium (Debian's package) opens the app, presses Generate, sees a drawing.

Selenium drives Debian's chromedriver; both paths are given explicitly so that Selenium never
tries to download a browser or a driver (there is no internet in CI).
"""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from app.main import build_app, launch_app
from handwriting_hm.model import load_handwriting_model
from factories import write_tiny_checkpoint  # tests/ is on sys.path under pytest's default import mode

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PAGE_TIMEOUT_S = 60  # a loaded 2-core CI machine takes a while to render Gradio's page


def browser_installed() -> bool:
    return Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()


@pytest.mark.skipif(not browser_installed(),
                    reason="Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
def test_pressing_generate_draws_handwriting(tmp_path):
    model = load_handwriting_model(write_tiny_checkpoint(tmp_path / "tiny.pt"))
    app = build_app(model)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch_app(app, port=port, prevent_thread_lock=True)

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1200", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, PAGE_TIMEOUT_S)
        wait.until(lambda b: b.find_element(By.ID, "generate")).click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#drawings .hm-drawing svg path"))
        paths = browser.find_elements(By.CSS_SELECTOR, "#drawings .hm-drawing svg path")
        assert len(paths) > 0
        assert "UPDATE" in browser.find_element(By.CSS_SELECTOR, "#drawings .hm-details").text
        # the drawing uses the window's width (it used to sit in a box of about 600 of 1400 pixels)
        assert browser.find_element(By.CSS_SELECTOR, "#drawings .hm-drawing svg").size["width"] > 800
        browser.execute_script("window.scrollTo(0, 0)")
        screenshot = tmp_path / "app.png"
        assert browser.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
    finally:
        browser.quit()
        app.close()
