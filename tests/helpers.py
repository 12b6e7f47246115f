"""What the arena's, the CLI's and the browser's tests share: waiting, browser-like clients, worker processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.test import Client

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "a-long-test-password-1"


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def json_request(url: str, body: dict | None, token: str | None) -> tuple[int, dict]:
    """(status, JSON body) of a real HTTP request: a POST of ``body``, or a GET without one, with ``token`` as bearer."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def csrf_client(user=None) -> Client:
    """A client that enforces CSRF like a browser session does, logged in as ``user``."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    return client


def post_form(client: Client, url: str, data: dict):
    """GET the page for a CSRF cookie, then POST with the token, as a browser would."""
    client.get("/login/")
    token = client.cookies["csrftoken"].value
    return client.post(url, {**data, "csrfmiddlewaretoken": token})


def finished(run_id: int):
    """The run once it is done, finished with errors or failed, else None (a predicate for wait_for)."""
    from arena.evaluations.models import TERMINAL, Run

    return Run.objects.filter(pk=run_id, state__in=TERMINAL).first()


def row_counts() -> dict[str, int]:
    """How many rows each of the arena's tables (and the schedules beat reads) holds."""
    models = [
        model
        for model in apps.get_models()
        if model.__module__.startswith("arena.") or model._meta.app_label == "django_celery_beat"
    ]
    return {model._meta.label: model.objects.count() for model in models}


def database_url() -> str:
    """The test database, for a process of its own (a worker, daphne); PostgreSQL only."""
    database = connection.settings_dict
    if database["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("worker tests share the test database with a worker process: they need PostgreSQL")
    user, host, port = database["USER"] or "postgres", database["HOST"] or "127.0.0.1", database["PORT"] or 5432
    return f"postgres://{user}@{host}:{port}/{database['NAME']}"


@contextmanager
def serve_asgi(model_roots: list[Path], log_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """daphne serving arena.asgi (pages, /v1, websockets) on a free port, on the test database and Redis.

    Yields its base URL and the process; stopped on exit. Fails the test with daphne's log if it does not listen.
    """
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        ARENA_MODEL_ROOTS=",".join(str(path) for path in model_roots),
        PYTHONUNBUFFERED="1",
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "arena.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: proc.poll() is not None or _listening(port), timeout=60, what="daphne to listen")
        if proc.poll() is not None:
            pytest.fail(f"daphne exited with {proc.returncode}:\n{log_path.read_text()}")
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class WorkerProcess:
    """A real `celery worker` process (on both queues unless told), against the test database and Redis."""

    def __init__(
        self,
        model_roots: list[Path],
        extra_env: dict[str, str] | None = None,
        concurrency: int = 1,
        queues: str = "gpu,cpu",
        log_path: Path | None = None,
    ):
        self.env = dict(
            os.environ,
            DATABASE_URL=database_url(),
            REDIS_URL=settings.REDIS_URL,
            PYTHONUNBUFFERED="1",
            ARENA_MODEL_ROOTS=",".join(str(p) for p in model_roots),
            **(extra_env or {}),
        )
        self.concurrency = concurrency
        self.queues = queues
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        # The worker's node name is `<name>@<host>`.
        self.name = f"test-{os.getpid()}-{time.monotonic_ns()}"
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - the child keeps its own copy
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "arena",
                "worker",
                "-Q",
                self.queues,
                "--concurrency",
                str(self.concurrency),
                "--loglevel",
                "INFO" if self.log_path else "WARNING",
                "-n",
                f"{self.name}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            start_new_session=True,
        )
        if log:
            log.close()
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
