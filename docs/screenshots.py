"""Take the README's screenshots from a running arena that has the demo team.

    PORT=8765 ARENA_DATA_DIR=/tmp/arena-shots .venv/bin/python manage.py up --demo-suite-size 24 --concurrency 1 &
    .venv/bin/python docs/screenshots.py --url http://127.0.0.1:8765 --data-dir /tmp/arena-shots

Adds to the demo what the charts need, through the JSON API with the demo token: a mutual-information
selection blend (it learns on the dev split, so its run generates the dev items too), a second suite,
and a second run of the first suite (free: every generation is cached), waits for the runs, then saves
PNGs of the main pages with Debian's Chromium. Real models, real results: nothing is made up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

OUT = Path(__file__).resolve().parent / "screenshots"
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
MEMBERS = ["smollm2-135m-chat", "smollm2-135m-plain", "gemma-3-270m"]


def wait_run(api: httpx.Client, run_id: int, timeout: float = 3600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/runs/{run_id}").raise_for_status().json()
        done = sum(r["done_items"] for r in run["entries"])
        total = sum(r["total_items"] for r in run["entries"])
        print(f"run #{run_id}: {run['state']} {done}/{total}", file=sys.stderr)
        if run["state"] in ("done", "failed"):
            return run
        time.sleep(10)
    raise SystemExit(f"run #{run_id} did not finish within {timeout:.0f} s")


def start_run(api: httpx.Client, suite: str, entries: list[str]) -> dict:
    return wait_run(api, api.post("/runs", json={"suite": suite, "entries": entries}).raise_for_status().json()["id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    creds = json.loads((args.data_dir / "demo-credentials.json").read_text())
    api = httpx.Client(base_url=f"{args.url}/api/v1", headers={"Authorization": f"Bearer {creds['token']}"}, timeout=60)

    while True:  # the demo's first run
        rows = api.get("/leaderboard/arithmetic").raise_for_status().json()["rows"]
        if rows and all(r["state"] in ("done", "failed") for r in rows):
            break
        print("waiting for the demo run", file=sys.stderr)
        time.sleep(10)
    if not any(e["name"] == "mi-select-2" for e in api.get("/entries").raise_for_status().json()):
        api.post(
            "/blends",
            json={"name": "mi-select-2", "strategy": "mi_selection", "params": {"k": 2}, "members": MEMBERS},
        ).raise_for_status()
    selection = start_run(api, "arithmetic", [*MEMBERS, "majority-vote", "mi-select-2"])
    api.post("/suites/builtin", json={"name": "unit_conversion", "size": 24}).raise_for_status()
    start_run(api, "unit_conversion", [*MEMBERS, "majority-vote"])
    entries = {e["name"]: e["id"] for e in api.get("/entries").raise_for_status().json()}

    args.out.mkdir(parents=True, exist_ok=True)
    base = f"{args.url}/t/demo"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{args.url}/login/")
        page.fill("input[name=username]", creds["username"])
        page.fill("input[name=password]", creds["password"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/")

        def shoot(name: str, url: str, ready: str) -> None:
            page.goto(url)
            page.wait_for_function(ready)
            page.wait_for_timeout(500)  # plotly's transitions
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
            print(f"saved {args.out / name}.png", file=sys.stderr)

        drawn = "id => document.getElementById(id) && document.getElementById(id).dataset.drawn"
        shoot("leaderboard", f"{base}/leaderboard/arithmetic/", f"({drawn})('chart-cost-quality')")
        shoot("run", f"{base}/runs/{selection['id']}/", f"({drawn})('chart-selection-{entries['mi-select-2']}')")
        shoot("all-suites", f"{base}/leaderboard/", f"({drawn})('chart-heatmap')")
        shoot("entry", f"{base}/entries/{entries['majority-vote']}/", f"({drawn})('chart-history')")
        shoot(
            "compare",
            f"{base}/compare/?a={entries['majority-vote']}&b={entries['smollm2-135m-plain']}&run={selection['id']}",
            "document.getElementById('compare-summary')",
        )
        browser.close()


if __name__ == "__main__":
    main()
