"""Drive the app in a real headless Chromium (Selenium + chromedriver): start the server on 127.0.0.1 on a free port,
open a browser on it, find widgets by their labels. Used by the end-to-end test and by the screenshot script.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``make test-browser`` installs them) and selenium
(a dev dependency). ``find_browser()`` says what is missing, so a caller can skip with that reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)


def find_browser() -> tuple[str | None, str | None, str]:
    """(browser path, driver path, reason): the reason says what is missing when either path is None."""
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = next((shutil.which(d) for d in DRIVERS if shutil.which(d)), None)
    try:
        import selenium  # noqa: F401
    except ImportError:
        return browser, None, "selenium is not installed (pip install -e '.[dev]')"
    missing = [n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None]
    reason = (f"no headless browser: {' and '.join(missing)} not found; install Debian's chromium and chromium-driver "
              "(make test-browser does it)") if missing else ""
    return browser, driver, reason


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_server(port: int | None = None, timeout: float = 90.0, log: Path | None = None) -> Iterator[str]:
    """The app served on 127.0.0.1 (``python -m dreamalloc.app --headless``); yields its URL, stops it after."""
    port = port or free_port()
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path}  # this checkout's package, whatever is installed
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "dreamalloc.app", "--headless", "--port", str(port), "--",
                             "--server.fileWatcherType", "none"], stdout=out, stderr=subprocess.STDOUT, env=env,
                            cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the app server exited with status {proc.returncode} before it answered")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app server did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator:
    """A headless Chromium driven by chromedriver (the system's, never a download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver, reason = find_browser()
    if reason:
        raise RuntimeError(reason)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def wait_for(drv, condition, timeout: float = 60.0, what: str = "the page"):
    """Poll ``condition(drv)`` until it returns something true; a TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            got = condition(drv)
            if got:
                return got
        except Exception as e:  # noqa: BLE001 - elements come and go while Streamlit reruns
            last = e
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}"
                       + (f" (last error: {last})" if last else ""))


def idle(drv, timeout: float = 60.0) -> None:
    """Wait until Streamlit has finished running the script (its status widget is gone)."""
    from selenium.webdriver.common.by import By

    time.sleep(0.5)
    wait_for(drv, lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'), timeout,
             "the app to finish running")


def _labelled(testid: str, label: str) -> str:
    return f'//*[@data-testid="{testid}"][.//*[@data-testid="stWidgetLabel"][normalize-space(.)="{label}"]]'


def widget(drv, testid: str, label: str):
    """The widget container ``data-testid=testid`` whose label reads ``label``."""
    from selenium.webdriver.common.by import By

    xp = _labelled(testid, label)
    return wait_for(drv, lambda d: d.find_element(By.XPATH, xp), what=f"the {testid} labelled {label!r}")


def type_into(drv, label: str, text: str) -> None:
    """Replace a text input's value and press Enter (Streamlit reruns on it). Elements are looked up afresh on each
    try: Streamlit may redraw them between two calls."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def attempt(d):
        box = d.find_element(By.XPATH, _labelled("stTextInput", label) + "//input")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        box.send_keys(text, Keys.ENTER)
        return True

    wait_for(drv, attempt, what=f"the text input {label!r}")
    idle(drv)


def choose(drv, label: str, option: str, testid: str = "stRadio") -> None:
    """Click a radio option (looked up afresh on each try)."""
    from selenium.webdriver.common.by import By

    xp = _labelled(testid, label) + f'//label[normalize-space(.)="{option}"]'
    wait_for(drv, lambda d: d.find_element(By.XPATH, xp).click() or True, what=f"the option {option!r} of {label!r}")
    idle(drv)


def charts(drv) -> list:
    """The rendered Plotly charts, once each has drawn its plot."""
    from selenium.webdriver.common.by import By

    return wait_for(drv, lambda d: [c for c in d.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"]')
                                    if c.find_elements(By.CSS_SELECTOR, ".main-svg")], what="the charts to draw")


__all__ = ["app_server", "charts", "choose", "chromium", "find_browser", "free_port", "idle", "type_into",
           "wait_for", "widget"]
