"""A real browser (Debian's Chromium through Playwright) against the arena served by daphne, HTTP and
websockets both, with a real Celery worker, all on the test database and the test Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import serve_asgi

CHROMIUM = Path("/usr/bin/chromium")
# No GPU, no sandbox (containers), and nothing reached beyond the arena itself.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def arena_server(transactional_db, clean_redis, worker_roots, tmp_path):
    """daphne serving arena.asgi (pages and websockets) on a free port; yields its base URL."""
    with serve_asgi(worker_roots, tmp_path / "daphne.log") as (base, _):
        yield base


@pytest.fixture
def chromium():
    """Chromium, started per test: Playwright's event loop must be gone before the test database is flushed."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests drive Debian's Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_context(chromium):
    # Playwright's sync API keeps an event loop running in this thread, so the test checks what the
    # pages show rather than querying the database itself (Django refuses queries from there).
    context = chromium.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    context.set_default_timeout(30_000)
    yield context
    context.close()


@pytest.fixture
def tiny_models(tiny_variant, tmp_path):
    # Under the test's own temporary folder, inside the base one that the server and worker accept as a root.
    root = tmp_path / "browser-models"
    root.mkdir()
    return [tiny_variant(root / f"tiny-{x}", seed=n) for n, x in enumerate("ab", start=1)]
