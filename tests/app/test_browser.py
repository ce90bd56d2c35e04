"""End-to-end: headless Chromium (Debian's package) opens the app, presses Generate, sees a drawing;
on the Write tab it draws on the canvas with the mouse, which fills the hidden strokes box, and writes.

Selenium drives Debian's chromedriver; both paths are given explicitly so that Selenium never
tries to download a browser or a driver (there is no internet in CI).
"""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from app.main import build_app, launch_app
from handwriting_hm.unconditional.model import load_handwriting_model
from handwriting_hm.synthesis.model import load_synthesis_model
from tests.factories import write_tiny_checkpoint
from tests.write_factory import write_tiny_synthesis_checkpoint

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PAGE_TIMEOUT_S = 60  # a loaded 2-core CI machine takes a while to render Gradio's page


def browser_installed() -> bool:
    return Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()


needs_browser = pytest.mark.skipif(not browser_installed(), reason="Chromium and chromedriver are not installed "
                                                                  "(apt-get install chromium chromium-driver)")


def open_browser(profile: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1200", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


def serve(app) -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch_app(app, port=port, prevent_thread_lock=True)
    return port


@needs_browser
def test_pressing_generate_draws_handwriting(tmp_path):
    model = load_handwriting_model(write_tiny_checkpoint(tmp_path / "tiny.pt"))
    app = build_app(model)
    port = serve(app)
    browser = open_browser(tmp_path / "profile")
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


@needs_browser
def test_drawing_on_the_canvas_records_strokes_that_prime_the_writing(tmp_path):
    model = load_handwriting_model(write_tiny_checkpoint(tmp_path / "tiny.pt"))
    synthesis = load_synthesis_model(write_tiny_synthesis_checkpoint(tmp_path / "synthesis.pt", " abcdehilnorw"))
    app = build_app(model, synthesis)
    port = serve(app)
    browser = open_browser(tmp_path / "profile")
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, PAGE_TIMEOUT_S)
        wait.until(lambda b: b.find_element(By.XPATH, "//button[@role='tab'][normalize-space()='Write']")).click()
        canvas = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#style_canvas canvas"))
        wait.until(lambda b: canvas.is_displayed())
        strokes_box = "return document.querySelector('#style_strokes textarea').value"
        # two strokes, drawn as a mouse draws them: press, move, release (offsets from the canvas's centre)
        draw = ActionChains(browser)
        draw.move_to_element_with_offset(canvas, -200, 0).click_and_hold()
        for _ in range(5):
            draw.move_by_offset(20, -8)
        draw.release().move_to_element_with_offset(canvas, -100, 10).click_and_hold().move_by_offset(30, 0).release()
        draw.perform()
        strokes = json.loads(wait.until(lambda b: b.execute_script(strokes_box)))
        assert [len(stroke) for stroke in strokes][0] >= 6 and len(strokes) == 2
        assert all(len(point) == 2 for stroke in strokes for point in stroke)

        chosen = browser.find_element(By.CSS_SELECTOR, "#style input[value='canvas']")
        wait.until(lambda b: chosen.is_selected())  # drawing picked the canvas as the style
        browser.find_element(By.CSS_SELECTOR, "#style_text textarea, #style_text input").send_keys("hi")
        browser.find_element(By.ID, "write").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#write_drawing .hm-drawing svg path"))
        finished = browser.find_element(By.CSS_SELECTOR, "#finished textarea, #finished input")
        assert wait.until(lambda b: finished.get_attribute("value")).startswith(("Finished", "Stopped"))

        browser.find_element(By.CSS_SELECTOR, "#style_canvas .hm-clear").click()
        wait.until(lambda b: b.execute_script(strokes_box) == "")
        none = browser.find_element(By.CSS_SELECTOR, "#style input[value='none']")
        wait.until(lambda b: none.is_selected())
    finally:
        browser.quit()
        app.close()
