"""The memory-map app end to end in a real headless Chromium: the server started on 127.0.0.1 on a free port, a
request list typed into the Playground, the rule switched, and the rendered map and placements checked to change.

Needs Debian's chromium and chromium-driver (``make test-browser`` installs them); skipped, saying so, without.
"""

from __future__ import annotations

import pytest

from dreamalloc.app import browser

_, _, MISSING = browser.find_browser()
pytestmark = pytest.mark.skipif(bool(MISSING), reason=MISSING or "browser found")

REQUESTS = "Requests (sizes in cells; fK frees block K)"


def _placements(drv) -> str:
    from selenium.webdriver.common.by import By

    tables = drv.find_elements(By.CSS_SELECTOR, '[data-testid="stTable"]')
    return tables[-1].text if tables else ""


def test_type_requests_switch_rule_and_the_map_changes(tmp_path):
    with browser.app_server(log=tmp_path / "server.log") as url, browser.chromium() as drv:
        drv.get(url)
        browser.idle(drv)
        browser.wait_for(drv, lambda d: "cells 15-22" in _placements(d), what="the default request list's table")
        # 30 and 40 fit nowhere on Mandal & Rohil's heap (its free runs hold at most 10 cells); 10 fits
        browser.type_into(drv, REQUESTS, "30 40 f1 10 50 f2 5")
        browser.wait_for(drv, lambda d: "30 cells (block 1)" in _placements(d), what="the typed list's table")
        text_first = _placements(drv)
        assert "cells 15-24" in text_first and "cells 0-4" in text_first  # first fit: 10 at 15, then 5 at 0
        map_first = browser.charts(drv)[1].screenshot_as_png
        browser.choose(drv, "Request by request", "next")
        browser.wait_for(drv, lambda d: "cells 30-34" in _placements(d), what="next fit's table")
        map_next = browser.charts(drv)[1].screenshot_as_png  # next fit: 5 goes after the rover, to 30
        assert map_next != map_first
        assert "next: the map after each request" in drv.page_source
