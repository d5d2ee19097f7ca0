"""The explorer in a real browser: JupyterLab on localhost, headless Chromium, notebook 00.

The test starts JupyterLab (token, temporary config and runtime folders, serving a copy of
notebook 00 so nothing is saved into the checkout), opens the notebook in Debian's
Chromium driven by selenium through Debian's chromedriver (nothing is downloaded), runs
every cell, drags the explorer's iterations slider and checks that the figure is redrawn
(new image, new pixels, the slider's new value in the figure's status line). Screenshots
go to ``<outputs>/browser/`` (``outputs/tests/browser/`` under pytest).

It is marked ``browser`` (skip it with ``-m "not browser"``) and is ordered after the
notebooks' own runs (tests/conftest.py), so the quick profile's data and base model come
from their cache. Without Chromium it is skipped, unless ``FSSTOOLS_BROWSER_REQUIRED=1``
(set by ``.ci/run``, which installs it) makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fsstools import paths

pytestmark = [pytest.mark.browser, pytest.mark.notebooks, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = "00_walkthrough.ipynb"
CHROMIUM = os.environ.get("FSSTOOLS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FSSTOOLS_CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRED_ENV = "FSSTOOLS_BROWSER_REQUIRED"
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-default-browser-check", "--window-size=1400,1100",
)  # fmt: skip
"""Headless, and quiet on a closed network (no update, sync or component checks)."""
SERVER_START_S = 120
KERNEL_START_S = 120
RUN_ALL_S = 1200
"""Running notebook 00: seconds with its caches, minutes if it must train the base model."""
REDRAW_S = 60
POLL_S = 0.5
DRAG_PIXELS = -40
"""How far the iterations slider's handle is dragged (left: fewer iterations)."""
FIGURE = "img.fsstools-explorer-figure"
STATUS = ".fsstools-explorer-status"
HANDLE = ".fsstools-explorer-iterations .noUi-handle"
READOUT = ".fsstools-explorer-iterations .widget-readout"

# JavaScript run in the page through JupyterLab's app object (exposed by the server option
# LabApp.expose_app_in_browser): the notebook's kernel state, and the errors of its cells.
KERNEL_STATUS_JS = """
const app = window.jupyterapp;
const panel = app && app.shell.currentWidget;
const session = panel && panel.sessionContext && panel.sessionContext.session;
return session && session.kernel ? session.kernel.status : null;
"""
CELL_ERRORS_JS = """
const panel = window.jupyterapp.shell.currentWidget;
const errors = [];
for (const cell of panel.content.widgets) {
  if (cell.model.type !== 'code') continue;
  for (const out of cell.model.outputs.toJSON()) {
    if (out.output_type === 'error') errors.push(out.ename + ': ' + out.evalue);
  }
}
return errors;
"""


def _tools_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = (f"needs {', '.join(missing)} (apt-get install chromium chromium-driver; "
                   "pip install selenium; .ci/run does both)")
        if os.environ.get(REQUIRED_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    url: str
    token: str
    folder: Path
    log: Path

    def page(self, path: str) -> str:
        return f"{self.url}/{path}?token={self.token}"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab serving a copy of notebook 00 from a folder of its own."""
    _tools_or_skip()
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(REPO / "notebooks" / NOTEBOOK, folder / NOTEBOOK)
    port, token = _free_port(), os.urandom(16).hex()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "FSSTOOLS_OUTPUTS": str(paths.outputs_dir()),  # the notebooks' cache, as absolute
    }
    log = tmp_path / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if os.geteuid() == 0:  # CI machines run as root; JupyterLab refuses unless told
        command.append("--allow-root")
    with log.open("w") as sink:
        server = subprocess.Popen(command, env=env, cwd=folder, stdout=sink,
                                  stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{log.read_text()[-3000:]}")
                time.sleep(POLL_S)
        yield Lab(url, token, folder, log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture
def browser(tmp_path: Path):
    """Headless Chromium under selenium, with a fresh profile."""
    _tools_or_skip()
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium never looks for drivers online
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(what: str, condition, timeout: float, lab: Lab, driver=None):
    """Poll ``condition()`` until it returns something true; fail after ``timeout`` with the
    server's log and the cells' errors."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(POLL_S)
    errors = driver.execute_script(CELL_ERRORS_JS) if driver is not None else []
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; cell errors: {errors}\n"
                f"JupyterLab log:\n{lab.log.read_text()[-3000:]}")


def _element(driver, selector: str):
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0] if found else None


def test_explorer_redraws_in_jupyterlab(lab: Lab, browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    shots_dir = paths.outputs_dir() / "browser"
    shots_dir.mkdir(parents=True, exist_ok=True)
    browser.get(lab.page(f"lab/tree/{NOTEBOOK}"))
    _wait("the notebook's kernel", lambda: browser.execute_script(KERNEL_STATUS_JS) == "idle",
          KERNEL_START_S, lab, None)
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")

    def figure_or_error():
        errors = browser.execute_script(CELL_ERRORS_JS)
        if errors:
            pytest.fail(f"notebook 00 failed in the browser: {errors}")
        img = _element(browser, FIGURE)
        return img if img is not None and img.get_attribute("src") else None

    tic = time.monotonic()
    figure = _wait("the explorer's figure", figure_or_error, RUN_ALL_S, lab, browser)
    run_all_s = time.monotonic() - tic
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", figure)
    explorer = _element(browser, ".fsstools-explorer")
    explorer.screenshot(str(shots_dir / "explorer_before.png"))
    before_src, before_png = figure.get_attribute("src"), figure.screenshot_as_png
    before_readout = _element(browser, READOUT).text
    before_status = _element(browser, STATUS).text

    handle = _element(browser, HANDLE)
    tic = time.monotonic()
    ActionChains(browser).drag_and_drop_by_offset(handle, DRAG_PIXELS, 0).perform()
    _wait("a redrawn figure", lambda: _element(browser, FIGURE).get_attribute("src")
          != before_src, REDRAW_S, lab, browser)
    redraw_s = time.monotonic() - tic
    figure = _element(browser, FIGURE)
    after_readout = _element(browser, READOUT).text
    after_status = _wait("the status line", lambda: (_element(browser, STATUS).text
                         if _element(browser, STATUS).text != before_status else None),
                         REDRAW_S, lab, browser)
    explorer = _element(browser, ".fsstools-explorer")
    explorer.screenshot(str(shots_dir / "explorer.png"))
    browser.save_screenshot(str(shots_dir / "jupyterlab.png"))

    assert before_readout == "50"  # RePRI's 50 iterations to start with
    assert after_readout != before_readout and int(after_readout) < 50
    assert f"{after_readout} steps" in after_status  # the figure shows the new setting
    assert figure.screenshot_as_png != before_png
    assert browser.execute_script(CELL_ERRORS_JS) == []
    record = {"run_all_s": round(run_all_s, 1), "drag_to_new_figure_s": round(redraw_s, 2),
              "iterations": [int(before_readout), int(after_readout)],
              "status_before": before_status, "status_after": after_status,
              "screenshot": str(shots_dir / "explorer.png")}
    (shots_dir / "browser.json").write_text(json.dumps(record, indent=2) + "\n")
    # the served copy was run and saved by JupyterLab at most; the checkout's is untouched
    import nbformat

    stored = nbformat.read(REPO / "notebooks" / NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in stored.cells if c.cell_type == "code")
