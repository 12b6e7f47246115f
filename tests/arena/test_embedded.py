"""The embedded default as a new user starts it: `manage.py up`, a demo run, one Ctrl-C."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
from django.conf import settings

from arena.core.states import TERMINAL, State
from tests.helpers import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow


def get_json(url: str, token: str | None = None):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_up_runs_the_demo_to_a_leaderboard_and_one_ctrl_c_stops_everything(tmp_path):
    data_dir = str(tmp_path / "data")
    port = free_port()
    unset = ("DATABASE_URL", "REDIS_URL", "ARENA_MODEL_ROOTS", "ARENA_DEBUG")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(ARENA_DATA_DIR=data_dir, PORT=str(port), PYTHONUNBUFFERED="1")
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    children: list[psutil.Process] = []
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "up", "--demo-suite-size", "8"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        banner = wait_for(
            lambda: "Press Ctrl-C" in (tmp_path / "up.log").read_text() and (tmp_path / "up.log").read_text(),
            timeout=600,
            what="the arena to start",
        )
        assert f"http://127.0.0.1:{port}/" in banner
        creds = json.loads((tmp_path / "data" / "demo-credentials.json").read_text())
        assert f"demo owner login: demo / {creds['password']}" in banner
        assert creds["token"] in banner
        base = f"http://127.0.0.1:{port}"

        # The worker takes a few seconds to answer pings after the web server is up.
        health = wait_for(lambda: (r := get_json(f"{base}/healthz"))[0] == 200 and r[1], timeout=60, what="healthz")
        assert health["database"]["engine"] == "sqlite" and health["redis"]["ok"] and health["workers"]["alive"]
        # Static files were collected: hashed names and a long max-age, as in production.
        login = urllib.request.urlopen(f"{base}/login/").read().decode()  # noqa: S310 - our own server
        css = re.search(r'href="(/static/arena/arena\.[0-9a-f]{12}\.css)"', login)
        assert css, login[:1000]
        assert "immutable" in urllib.request.urlopen(base + css[1]).headers["Cache-Control"]  # noqa: S310
        # DEBUG is off: a 404 lists no URL patterns, and every answer carries its request id.
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/no/such/page/")  # noqa: S310 - our own server
        page = missing.value.read().decode()
        assert missing.value.code == 404 and "URLconf" not in page and "leaderboard" not in page
        assert len(missing.value.headers["X-Request-ID"]) == 32
        # A body over the limit is a 413 from its Content-Length, and Django never reads it. (Daphne
        # itself takes in the whole body, spooled to a file, before the application sees the request.)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        over = b" " * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
        connection.request("POST", "/api/v1/suites", body=over, headers={"Content-Type": "application/json"})
        too_large = connection.getresponse()
        assert too_large.status == 413 and "larger than this arena accepts" in json.loads(too_large.read())["detail"]
        connection.close()

        def demo_run_finished():
            status, run = get_json(f"{base}/api/v1/runs/1", creds["token"])
            return run if status == 200 and run["state"] in TERMINAL else None

        run = wait_for(demo_run_finished, timeout=600, interval=2, what="the demo run to finish")
        assert run["state"] == State.DONE, run["error"]
        status, board = get_json(f"{base}/api/v1/leaderboard/arithmetic", creds["token"])
        assert status == 200
        rows = {r["entry"]: r for r in board["rows"]}
        assert set(rows) == {"smollm2-135m-chat", "smollm2-135m-plain", "gemma-3-270m", "majority-vote"}
        assert all(r["score"] is not None and r["n"] == 4 for r in rows.values())
        assert rows["majority-vote"]["members"] == ["smollm2-135m-chat", "smollm2-135m-plain", "gemma-3-270m"]
        assert rows["majority-vote"]["lift"] is not None
        children = psutil.Process(proc.pid).children(recursive=True)
        # The embedded Redis listens on loopback only.
        redis_procs = [process for process in children if process.exe().endswith("redis-server")]
        listening = [
            connection.laddr.ip
            for process in redis_procs
            for connection in process.net_connections("tcp")
            if connection.status == "LISTEN"
        ]
        assert listening and set(listening) == {"127.0.0.1"}
        assert len(children) >= 4  # redis, worker, beat, web (and worker children)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        finally:
            log.close()
    assert proc.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert "Stopped." in (tmp_path / "up.log").read_text()
    time.sleep(0.5)
    assert [process for process in children if process.is_running() and process.status() != psutil.STATUS_ZOMBIE] == []
