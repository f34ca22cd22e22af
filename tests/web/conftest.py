"""A real server process and Debian's Chromium driven by Playwright.

Chromium comes from the system (``apt-get install chromium``), never from a
download: the tests fail with a clear message when it is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from tests.live import LiveServer

CHROMIUM = os.environ.get("FLYWHEEL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


@pytest.fixture
def browser() -> Iterator[object]:
    """Per test: Playwright's sync API keeps an event loop running in this thread
    while it is open, which would break every later test that calls asyncio.run."""
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Chromium is not at {CHROMIUM}: apt-get install chromium (or set FLYWHEEL_TEST_CHROMIUM)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.js_errors = errors
    yield page
    context.close()


@pytest.fixture
def server(settings) -> Iterator[LiveServer]:
    live = LiveServer(settings.database_url, settings.home).start()
    yield live
    live.stop()


def screenshot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    """With FLYWHEEL_SCREENSHOTS=DIR, keep a screenshot of the page (for the docs)."""
    folder = os.environ.get("FLYWHEEL_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=False)
