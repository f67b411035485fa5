"""Headless Chromium for the dashboard tests: Debian's `chromium` driven by Playwright for Python
(the system browser; `playwright install` is never run), and screenshots at desktop and phone
widths into target/dashboard-screenshots/ (or $WEFT_SCREENSHOT_DIR). Shared by
test_dashboard.py and cluster/test_dashboard_cluster.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from weft_harness import REPO, in_ci

CHROMIUM = os.environ.get("WEFT_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("WEFT_SCREENSHOT_DIR") or (REPO / "target" / "dashboard-screenshots"))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def need_browser() -> None:
    """Skip loudly outside CI, fail under CI=true, when the browser or Playwright is missing."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (tests/python/requirements.txt)")
    if missing:
        msg = "THE DASHBOARD TESTS DID NOT RUN: missing " + "; ".join(missing)
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)


@contextlib.contextmanager
def chromium():
    """A browser context on a fresh user data dir, closed and removed afterwards."""
    need_browser()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="weft-chromium-")
    try:
        with sync_playwright() as p:
            # A persistent context is how Chromium gets a user data dir of our choosing.
            ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                       headless=True, viewport=DESKTOP)
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@contextlib.contextmanager
def new_page(ctx):
    """A page that fails the test on any uncaught JavaScript error."""
    pg = ctx.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        pg.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shoot(pg, name: str) -> None:
    """Full-page screenshots at desktop and phone widths, then back to desktop. At the phone's
    width nothing may force the page wider than the screen."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        pg.set_viewport_size(size)
        pg.wait_for_function(f"window.innerWidth === {size['width']}")
        path = SHOTS / f"{name}-{label}.png"
        pg.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000, path
        if label == "phone":
            width = pg.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"] + 1, f"{name}: the page is {width}px wide at 390px"
    pg.set_viewport_size(DESKTOP)
