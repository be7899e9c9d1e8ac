"""The browser fixture leaves nothing running behind its module.

Playwright's sync API marks an asyncio loop running in the main thread while it is started. The CI
run of issue 12 found the fixture scoped to the session: the first browser module's Playwright
outlived it, so a later module's ``asyncio.run`` and a second module's Playwright both failed. This
runs that order in a pytest of its own: two browser modules, then one that calls ``asyncio.run``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.browser import find_chromium, unavailable
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.version_free

BROWSER_MODULE = textwrap.dedent(
    """
    from tests.browser import browser_fixture, page_fixture  # noqa: F401 - fixtures

    def test_a_page_loads(page):
        page.set_content("<p id=x>hello</p>")
        assert page.text_content("#x") == "hello"
    """
)
ASYNCIO_MODULE = textwrap.dedent(
    """
    import asyncio

    def test_asyncio_run_still_works():
        assert asyncio.run(asyncio.sleep(0, result=42)) == 42
    """
)


def test_browser_modules_then_asyncio_run_in_one_session(tmp_path):
    try:
        import playwright  # noqa: F401
    except ImportError as err:
        unavailable(f"Playwright is not installed ({err})")
    if find_chromium() is None:
        unavailable("Chromium (Debian's package) is not installed")
    # Names sort in the order that failed: browser, browser, then asyncio.
    (tmp_path / "test_a_browser.py").write_text(BROWSER_MODULE)
    (tmp_path / "test_b_browser.py").write_text(BROWSER_MODULE)
    (tmp_path / "test_c_asyncio.py").write_text(ASYNCIO_MODULE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout, result.stdout[-4000:]
