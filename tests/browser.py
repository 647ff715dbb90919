"""The console in a real browser: Debian's chromium driven by Playwright, a
page per user, a screenshot of each step under var/screenshots/<test>/ (where
a failing run can be looked at)."""
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.support import ROOT

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(ROOT) / "var" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: make test installs it (scripts/ensure_chromium.py)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium, or make test as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def console(browser, request):
    """console(base_url, name): a new page (its own context: its own
    sessionStorage, as a tab of another person) on base_url/console."""
    folder = SCREENSHOTS / re.sub(r"[^\w.-]", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    contexts, steps = [], iter(range(1, 1000))

    def open_page(base_url, name):
        context = browser.new_context(viewport={"width": 1200, "height": 760})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15000)
        page.name = name
        page.goto(f"{base_url}/console")
        return page

    def shoot(step, *pages):
        """A screenshot of each page at this step of the test."""
        number = next(steps)
        for page in pages:
            page.screenshot(path=folder / f"{number:02d}-{step}-{page.name}.png")

    open_page.shoot = shoot
    yield open_page
    for context in contexts:
        context.close()
