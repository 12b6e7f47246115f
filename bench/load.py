"""Load test: websocket viewers on a live leaderboard and a steady stream of API requests, against a running arena.

Each viewer does what the leaderboard page does (static/arena/live.js, templates/leaderboard/board.html):
it opens the board's websocket with the signed-in session and reloads the board's JSON snapshot and
then its chart when the socket opens, and on every event that does not carry the snapshot itself
(an arena from before events carried it: every event), one reload at a time. Meanwhile API requests
go out at a fixed rate whether or not the earlier ones have answered (an open loop: a slow server
cannot slow the load down and hide its own latency). With --start-run the test first starts a run,
so the board is live while it is measured.

    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --username demo --password PW \\
        --token arena_... --team demo --suite arithmetic --start-run smollm2-135m-chat,gemma-3-270m \\
        [--viewers 200] [--rps 20] [--duration 180] [--ramp 10]

Prints, for API requests, websocket connections, snapshot and chart reloads, and live updates (from
the moment the worker published an event to the moment the page has what it shows: the pushed
snapshot's arrival, or the end of the reload the event caused; an arena whose events carry no "at"
counts from the event's arrival): count, errors, p50, p95 and max latency in milliseconds, as a
Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

P95_GOAL_MS = 300.0


@dataclass
class Series:
    """Latencies (ms) and errors of one kind of request."""

    name: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, started: float) -> None:
        self.latencies.append((time.perf_counter() - started) * 1000)

    def row(self) -> str:
        lat = sorted(self.latencies)
        if lat:
            p50, p95 = statistics.median(lat), lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
            cells = f"{p50:.0f} | {p95:.0f} | {lat[-1]:.0f}"
        else:
            cells = "- | - | -"
        return f"| {self.name} | {len(lat) + len(self.errors)} | {len(self.errors)} | {cells} |"

    def p95(self) -> float | None:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))] if lat else None


async def log_in(client: httpx.AsyncClient, username: str, password: str) -> str:
    """The session cookie of a signed-in user, got through the login page like a browser."""
    await client.get("/login/")
    response = await client.post(
        "/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": f"{client.base_url}login/"},
    )
    if response.status_code != 302 or "sessionid" not in client.cookies:
        sys.exit(f"login failed: HTTP {response.status_code}")
    return client.cookies["sessionid"]


async def viewer(
    n: int, args, session: str, web: httpx.AsyncClient, series: dict[str, Series], events: list[int], stop
):
    """One open leaderboard page: the socket; a snapshot and chart reload on opening and on every event
    that does not bring the snapshot along."""
    origin = args.url.rstrip("/")
    parts = urlsplit(origin)
    ws_url = f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}/ws/t/{args.team}/leaderboard/{args.suite}/"
    board = f"/t/{args.team}/leaderboard/{args.suite}/"
    pending, again = False, False
    stored_at: list[float] = []  # when the events the pending reload answers were published

    async def get(path: str, into: Series) -> bool:
        started = time.perf_counter()
        try:
            response = await web.get(path)
        except httpx.HTTPError as exc:
            into.errors.append(type(exc).__name__)
            return False
        if response.status_code != 200:
            into.errors.append(f"HTTP {response.status_code}")
            return False
        into.add(started)
        return True

    async def reload() -> None:
        nonlocal pending, again
        if pending:
            again = True
            return
        pending = True
        try:
            while True:
                again = False
                waiting, stored_at[:] = list(stored_at), []
                # The page renders the snapshot, then asks for the chart (ArenaCharts.refresh).
                if await get(board + "?format=json", series["reload"]):
                    for at in waiting:
                        series["live"].latencies.append((time.time() - at) * 1000)
                    await get(board + "?format=chart", series["chart"])
                if not again:
                    break
        finally:
            pending = False

    await asyncio.sleep(args.ramp * n / max(1, args.viewers))
    delay = 0.5
    while not stop.is_set():
        started = time.perf_counter()
        try:
            async with connect(
                ws_url, additional_headers={"Cookie": f"sessionid={session}", "Origin": origin}, open_timeout=30
            ) as ws:
                series["connect"].add(started)
                delay = 0.5
                asyncio.ensure_future(reload())
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=1.0)
                    except TimeoutError:
                        continue
                    events[n] += 1
                    event = json.loads(raw)
                    # From when the worker published it ("at"; an older arena's events lack it: from now).
                    at = event.get("at", time.time())
                    if "snapshot" in event:
                        series["live"].latencies.append((time.time() - at) * 1000)
                    else:
                        stored_at.append(at)
                        asyncio.ensure_future(reload())
                return
        except ConnectionClosed as exc:
            series["connect"].errors.append(f"closed {exc.rcvd.code if exc.rcvd else '?'}")
        except (OSError, TimeoutError, WebSocketException) as exc:
            series["connect"].errors.append(type(exc).__name__)
        # Like the page: reconnect after a pause that doubles up to 10 s.
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


async def api_load(args, api: httpx.AsyncClient, series: Series, stop, run_id: int | None) -> None:
    """Requests at a fixed rate, each on its own, cycling through the read endpoints a script calls."""
    paths = [f"/api/v1/leaderboard/{args.suite}", "/api/v1/entries", "/api/v1/suites"]
    if run_id is not None:
        paths.append(f"/api/v1/runs/{run_id}")
    tasks: set[asyncio.Task] = set()

    async def one(path: str) -> None:
        started = time.perf_counter()
        try:
            response = await api.get(path)
            if response.status_code == 200:
                series.add(started)
            else:
                series.errors.append(f"{path}: HTTP {response.status_code}")
        except httpx.HTTPError as exc:
            series.errors.append(f"{path}: {type(exc).__name__}")

    interval = 1.0 / args.rps
    next_at = time.perf_counter()
    for path in itertools.cycle(paths):
        if stop.is_set():
            break
        task = asyncio.ensure_future(one(path))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.gather(*tasks)


async def main(args) -> int:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    timeout = httpx.Timeout(30.0)
    async with (
        httpx.AsyncClient(base_url=args.url, limits=limits, timeout=timeout) as web,
        httpx.AsyncClient(
            base_url=args.url, limits=limits, timeout=timeout, headers={"Authorization": f"Bearer {args.token}"}
        ) as api,
    ):
        session = await log_in(web, args.username, args.password)
        run_id = None
        if args.start_run:
            response = await api.post("/api/v1/runs", json={"suite": args.suite, "entries": args.start_run.split(",")})
            if response.status_code != 201:
                sys.exit(f"could not start the run: HTTP {response.status_code} {response.text[:300]}")
            run_id = response.json()["id"]
        requests = Series("API request")
        series = {
            "connect": Series("websocket connect"),
            "reload": Series("snapshot reload"),
            "chart": Series("chart reload"),
            "live": Series("live update (event to shown)"),
        }
        events = [0] * args.viewers
        stop = asyncio.Event()
        started = time.monotonic()
        workers = [
            asyncio.ensure_future(viewer(n, args, session, web, series, events, stop)) for n in range(args.viewers)
        ]
        load = asyncio.ensure_future(api_load(args, api, requests, stop, run_id))
        await asyncio.sleep(args.ramp + args.duration)
        stop.set()
        await asyncio.gather(load, *workers)
        elapsed = time.monotonic() - started
        state = (await api.get(f"/api/v1/runs/{run_id}")).json().get("state") if run_id else "-"

    print(
        f"\n{args.viewers} viewers, {args.rps} API requests/s, {elapsed:.0f} s "
        f"(ramp {args.ramp:g} s), run {run_id or '-'} ({state} at the end)"
    )
    print(f"events per viewer: mean {statistics.mean(events):.1f}, min {min(events)}, max {max(events)}\n")
    print("| what | count | errors | p50 ms | p95 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    every = (requests, *series.values())
    for s in every:
        print(s.row())
    for s in every:
        for error, count in sorted({e: s.errors.count(e) for e in s.errors}.items()):
            print(f"  {s.name}: {count} x {error}")
    failed = any(s.errors for s in every) or (requests.p95() or 0) > P95_GOAL_MS
    print(f"\nAPI p95 goal {P95_GOAL_MS:.0f} ms and no errors: {'missed' if failed else 'met'}")
    return 1 if failed else 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--username", required=True, help="a member of the team, for the websocket session")
    parser.add_argument("--password", required=True)
    parser.add_argument("--token", required=True, help="an API token of the team")
    parser.add_argument("--team", default="demo")
    parser.add_argument("--suite", default="arithmetic")
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--rps", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of measurement after the ramp")
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which the viewers connect")
    parser.add_argument("--start-run", default="", help="comma-separated entries to run first, so the board is live")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
