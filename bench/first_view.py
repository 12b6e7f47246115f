"""First view of a leaderboard in a real browser, plotly deferred against plotly blocking, and /healthz.

Fills a fresh database (created for the benchmark and dropped after it) with two teams, one with a
board of 12 entries (a team's first, as the demo's) and one of 500 (bench/leaderboard_speed.py's
data), collects the static files as `manage.py up` serves them (hashed, gzip), and starts daphne and
one Celery worker on it. Headless Chromium (Debian's, through Playwright, as the browser tests drive
it) then opens each board with a cold cache, alternating two versions of the same page in one run:

- deferred: the page as the arena serves it: charts.js and live.js deferred, and charts.js fetching
  plotly.js once the page has loaded;
- blocking: the same page as the pages loaded it before: plotly.js put back as a blocking <script>
  before charts.js, and charts.js and live.js blocking too.

For each it reports the time to first contentful paint, to the `load` event, and to the chart drawn.
Then /healthz over HTTP, and the worker check inside it both ways: a broadcast ping (before) and the
workers' heartbeats in Redis (now).

    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python bench/first_view.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
os.environ.setdefault("ARENA_DATA_DIR", tempfile.mkdtemp(prefix="arena-bench-"))

import django  # noqa: E402 - the settings module must be chosen first

django.setup()

import redis  # noqa: E402
from celery import current_app  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from arena.deployment import heartbeat  # noqa: E402
from arena.teams.models import Membership, Role, Team  # noqa: E402
from bench.leaderboard_speed import BLENDS, SINGLES, fill  # noqa: E402

TARGET_MS = 300.0
HEALTH_TARGET_MS = 50.0
CHROMIUM = "/usr/bin/chromium"
# As the browser tests start it (tests/browser/conftest.py).
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
CHARTS_TAG = '<script defer src="/static/arena/charts.'

# Read in the page once `load` has fired: paint and load relative to the start of navigation.
TIMINGS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const paint = performance.getEntriesByName("first-contentful-paint")[0];
  return {fcp: paint ? paint.startTime : null, load: nav.loadEventStart, html: nav.responseEnd,
          first_byte: nav.responseStart, dom: nav.domInteractive};
}"""
# What each view records, in the order they happen (a blocking plotly.js is requested before `load`).
KEYS = ("first_byte", "html", "dom", "fcp", "load", "plotly_start", "chart")
# Once the chart is drawn: when, and when plotly.js was requested and had arrived.
DRAWN = """() => {
  const plotly = performance.getEntriesByType("resource").find(e => e.name.includes("/vendor/plotly"));
  const drawn = Number(document.getElementById("chart-cost-quality").dataset.drawn) - performance.timeOrigin;
  return {chart: drawn, plotly_start: plotly.startTime, plotly_end: plotly.responseEnd};
}"""


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        # Our own interpreter running the arena's own commands.
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := check():
                return value
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def fetch(url: str, headers: dict[str, str]) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:  # noqa: S310 - our own server
        return response.read()


def attribute(html: str, before: str) -> str:
    """The quoted value that follows ``before`` (which ends with its opening quote) in ``html``."""
    start = html.index(before) + len(before)
    return html[start : html.index('"', start)]


def median_p95(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def serving(version: str, plotly_url: str):
    """The route handler that serves the board as ``version``: both versions go through the same
    interception, so only the page itself differs. (Playwright passes a handler that takes two
    arguments the request as well, so ``version`` is bound here rather than as a default.)"""

    def serve(route) -> None:
        response = route.fetch()
        html = response.text()
        if version == "blocking":
            if CHARTS_TAG not in html:
                raise SystemExit("the board no longer loads charts.js")
            html = html.replace(CHARTS_TAG, f'<script src="{plotly_url}"></script>' + CHARTS_TAG, 1)
            html = html.replace("<script defer src=", "<script src=")
        route.fulfill(response=response, body=html)

    return serve


def first_views(base: str, path: str, session: str, plotly_url: str, repeats: int) -> dict[str, dict]:
    """Per version of the page: each of KEYS's times (ms) in every view, each view with a cold cache."""
    from playwright.sync_api import sync_playwright

    results: dict[str, dict[str, list[float]]] = {v: {key: [] for key in KEYS} for v in ("blocking", "deferred")}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for i in range(repeats + 1):  # the first round warms the server's caches and is not counted
            for version in ("blocking", "deferred") if i % 2 else ("deferred", "blocking"):
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                context.add_cookies([{"name": "sessionid", "value": session, "url": base}])
                page = context.new_page()

                page.route(base + path, serving(version, plotly_url))
                page.goto(base + path, wait_until="load")
                # A page can fire `load` before its first paint is reported.
                page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
                timings = page.evaluate(TIMINGS)
                page.wait_for_function("document.getElementById('chart-cost-quality').dataset.drawn")
                drawn = page.evaluate(DRAWN)
                # What each version is: plotly.js requested after `load`, or fetched before it.
                if (drawn["plotly_start"] > timings["load"]) != (version == "deferred"):
                    raise SystemExit(
                        f"{version}: plotly.js requested at {drawn['plotly_start']:.0f} ms, load at {timings['load']:.0f} ms"
                    )
                context.close()
                if i:
                    for key in KEYS:
                        results[version][key].append({**timings, **drawn}[key])
        browser.close()
    return results


def healthz_times(base: str, repeats: int) -> tuple[list[float], int]:
    times, status = [], 0
    for _ in range(repeats + 3):
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:  # noqa: S310 - our own server
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        times.append((time.perf_counter() - started) * 1000)
    return times[3:], status


def worker_checks(repeats: int) -> dict[str, list[float]]:
    """The worker half of /healthz, in process: a broadcast ping (before) and the heartbeats (now)."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    found: dict[str, list[float]] = {"broadcast ping (before)": [], "heartbeats in Redis (now)": []}
    for _ in range(repeats):
        started = time.perf_counter()
        replies = current_app.control.ping(timeout=1.0) or []
        found["broadcast ping (before)"].append((time.perf_counter() - started) * 1000)
        if not replies:
            raise SystemExit("the worker did not answer the ping")
        started = time.perf_counter()
        alive = [p for p in heartbeat.alive(client) if p["role"] == "worker"]
        found["heartbeats in Redis (now)"].append((time.perf_counter() - started) * 1000)
        if not alive:
            raise SystemExit("the worker wrote no heartbeat")
    return found


# The boards opened: a team's first ones (the demo has a dozen entries) and bench/leaderboard_speed.py's largest.
BOARDS = (("12 entries", 9, 3), ("500 entries", SINGLES, BLENDS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="cold first views per version of each page")
    parser.add_argument("--health-repeats", type=int, default=50)
    parser.add_argument("--port", type=int, default=0, help="daphne's port (default: a free one)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"this benchmark drives Debian's Chromium at {CHROMIUM}: apt-get install chromium")

    setup_test_environment()
    work = Path(tempfile.mkdtemp(prefix="arena-first-view-"))
    if connection.vendor == "sqlite":
        # daphne and the worker open the database too: a file, not the test runner's in-memory one.
        connection.settings_dict["TEST"]["NAME"] = str(work / "bench.sqlite3")
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    procs: list[subprocess.Popen] = []
    results = []
    try:
        user = get_user_model().objects.create_user("bench", password="bench-password-1")
        for label, singles, blends in BOARDS:
            team = Team.objects.create(name=label, slug=label.replace(" ", "-"))
            Membership.objects.create(team=team, user=user, role=Role.VIEWER)
            fill(team, singles, blends, 1)
        client = Client()
        client.force_login(user)
        session = client.cookies[settings.SESSION_COOKIE_NAME].value

        env = dict(
            os.environ,
            DATABASE_URL=database_url(),
            REDIS_URL=settings.REDIS_URL,
            ARENA_DATA_DIR=str(work),
            ARENA_SECRET_KEY=settings.SECRET_KEY,  # the session made here must hold there
            ARENA_COLLECTED_STATIC="1",  # as `manage.py up` and production serve them: hashed names, gzip
            PYTHONUNBUFFERED="1",
        )
        python = sys.executable
        collect = [python, "manage.py", "collectstatic", "--noinput", "-v", "0"]
        subprocess.run(collect, cwd=REPO, env=env, check=True)  # noqa: S603 - the arena's own command
        port = args.port or free_port()
        base = f"http://127.0.0.1:{port}"
        daphne = [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "arena.asgi:application"]
        procs.append(start(daphne, env, work / "daphne.log"))
        worker = [python, "-m", "celery", "-A", "arena", "worker", "-Q", "cpu", "--concurrency", "1"]
        worker += ["--loglevel", "WARNING", "-n", f"bench-{os.getpid()}@%h", "--without-gossip", "--without-mingle"]
        procs.append(start(worker, env, work / "worker.log"))
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, 60, "daphne")
        client = redis.Redis.from_url(settings.REDIS_URL)
        wait_until(lambda: [p for p in heartbeat.alive(client) if p["role"] == "worker"], 120, "the worker's beat")

        for label, _, _ in BOARDS:
            path = f"/t/{label.replace(' ', '-')}/leaderboard/suite-00/"
            board = fetch(base + path, {"Cookie": f"sessionid={session}"}).decode()
            # The hashed URLs the page uses, as the browser fetches them (gzipped).
            plotly_url = attribute(board, 'data-plotly="')
            views = first_views(base, path, session, plotly_url, args.repeats)
            results.append((label, len(board), views))
        charts_url = re.search(r'<script defer src="(/static/arena/charts\.[^"]*)"', board)[1]
        plotly_gzip = len(fetch(base + plotly_url, {"Accept-Encoding": "gzip"}))
        charts_size = len(fetch(base + charts_url, {}))
        health, health_status = healthz_times(base, args.health_repeats)
        checks = worker_checks(min(args.health_repeats, 10))
    finally:
        for proc in procs:
            stop(proc)
        connection.creation.destroy_test_db(old_name, verbosity=0)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{connection.vendor}; plotly.min.js {plotly_gzip:,} bytes gzipped, charts.js {charts_size:,} bytes;")
    print(f"{args.repeats} cold first views per page and version, alternating, after one warm-up round each;")
    print("ms from the start of navigation, median / p95:\n")
    print(
        "| board | plotly | HTML's first byte | HTML in | DOM interactive | first contentful paint | load event "
        "| plotly requested | chart drawn |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, size, views in results:
        for version in ("blocking", "deferred"):
            cells = ["{:.0f} / {:.0f}".format(*median_p95(views[version][key])) for key in KEYS]
            print(f"| {label} ({size // 1000} kB) | {version} | " + " | ".join(cells) + " |")
    print()
    for label, _, views in results:
        fcp, load = (
            statistics.median(views["blocking"][k]) / statistics.median(views["deferred"][k]) for k in ("fcp", "load")
        )
        deferred = statistics.median(views["deferred"]["fcp"])
        print(
            f"{label}: blocking / deferred, medians: first paint {fcp:.2f}x, load {load:.2f}x; "
            f"deferred first paint {deferred:.0f} ms (target {TARGET_MS:.0f} ms)"
        )

    print(f"\n| /healthz (HTTP {health_status}, {args.health_repeats} requests) | median ms | p95 ms |")
    print("| --- | ---: | ---: |")
    print("| whole request | {:.1f} | {:.1f} |".format(*median_p95(health)))
    for label, values in checks.items():
        print("| worker check: {} | {:.1f} | {:.1f} |".format(label, *median_p95(values)))
    before, now = (statistics.median(v) for v in checks.values())
    print(f"\nworker check, ping / heartbeats: {before / now:.0f}x (target: /healthz under {HEALTH_TARGET_MS:.0f} ms)")


if __name__ == "__main__":
    main()
