"""Browser tests: Debian's Chromium driven by Playwright, headless, one fresh context per test.

Playwright's own browser download is never used (the machines have no network for it): the
browser is the system's Chromium, ``/usr/lib/chromium/chromium`` or ``chromium``/``chromium-browser``
on PATH, or whatever ``DINGBOT_CHROMIUM`` names. Outside CI a missing browser or Playwright skips
the tests with the reason; in CI (``CI=true``) it fails them: browser tests never skip there.

A test module imports the fixtures, which is how pytest finds them (they are registered as
``browser`` and ``page``; the functions' own names keep the test's ``page`` argument from
shadowing an import)::

    from tests.browser import browser_fixture, page_fixture, screenshot  # noqa: F401 - fixtures

    def test_inbox(page):
        page.goto(url)
        screenshot(page, "inbox")

:func:`screenshot` saves a full-page PNG into ``DINGBOT_ARTIFACTS_DIR`` (default
``test-artifacts/screenshots/`` in the repository), for a person or CI to look at afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DEBIAN_CHROMIUM = "/usr/lib/chromium/chromium"
#: The machines' network is closed: without the background-networking flags Chromium keeps trying
#: to reach Google (updates, sync, field trials), which costs time and clutters its log.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = {"width": 1100, "height": 800}
DEFAULT_ARTIFACTS_DIR = REPO_ROOT / "test-artifacts" / "screenshots"


def unavailable(reason: str):
    """Skip outside CI; fail in CI, where the browser tests must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}: the browser tests must run in CI (.ci/packages installs Chromium)")
    pytest.skip(reason)


def find_chromium() -> str | None:
    """The Chromium to drive: ``DINGBOT_CHROMIUM`` if set, else Debian's, else one on PATH."""
    named = os.environ.get("DINGBOT_CHROMIUM")
    if named:
        return named if os.access(named, os.X_OK) else None
    if os.access(DEBIAN_CHROMIUM, os.X_OK):
        return DEBIAN_CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Module scope, not session: each importing module holds its own copy of the fixture, and Playwright's
# sync API keeps an asyncio loop marked running in the main thread while it is started. A session-wide
# instance would outlive its module and break every later ``asyncio.run`` (and a second Playwright).
@pytest.fixture(scope="module", name="browser")
def browser_fixture():
    """One headless Chromium per test module, stopped (with Playwright's loop) when the module ends."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        unavailable(f"Playwright is not installed ({err})")
    executable = find_chromium()
    if executable is None:
        named = os.environ.get("DINGBOT_CHROMIUM")
        unavailable(
            f"DINGBOT_CHROMIUM={named} is not an executable"
            if named
            else "Chromium (Debian's package) is not installed"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(name="page")
def page_fixture(browser):
    """A page in a context of its own: no cookies, storage or cache from another test."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-US", service_workers="block")
    try:
        yield context.new_page()
    finally:
        context.close()


def artifacts_dir() -> Path:
    return Path(os.environ.get("DINGBOT_ARTIFACTS_DIR") or DEFAULT_ARTIFACTS_DIR)


def screenshot(page, name: str) -> Path:
    """Save the whole page as ``<name>.png`` in :func:`artifacts_dir`; returns the file."""
    folder = artifacts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path
