"""A real browser (Debian's Chromium through Playwright) against the arena served by daphne, HTTP and
websockets both, with a real Celery worker, all on the test database and the test Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.helpers import ROOT, database_url, free_port

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
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        ARENA_MODEL_ROOTS=",".join(str(p) for p in worker_roots),
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "daphne.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "arena.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"daphne exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"daphne did not listen within 60 s:\n{log_path.read_text()}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


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
