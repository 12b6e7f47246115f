"""Personas (owner, teammate, outsider), a CSRF-enforcing client, and a real worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client

from arena.teams.models import ApiToken, Membership, Role, Team

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-long-test-password-1"


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("olivia", password=PASSWORD)


@pytest.fixture
def teammate(django_user_model):
    return django_user_model.objects.create_user("tom", password=PASSWORD)


@pytest.fixture
def viewer(django_user_model):
    return django_user_model.objects.create_user("vera", password=PASSWORD)


@pytest.fixture
def outsider(django_user_model):
    return django_user_model.objects.create_user("oscar", password=PASSWORD)


@pytest.fixture
def team(owner, teammate, viewer, outsider):
    t = Team.objects.create(name="Red team", slug="red")
    Membership.objects.create(team=t, user=owner, role=Role.OWNER)
    Membership.objects.create(team=t, user=teammate, role=Role.MEMBER)
    Membership.objects.create(team=t, user=viewer, role=Role.VIEWER)
    other = Team.objects.create(name="Blue team", slug="blue")
    Membership.objects.create(team=other, user=outsider, role=Role.OWNER)
    return t


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


@pytest.fixture
def clean_redis():
    """The test Redis database, emptied before and after."""
    r = redis.Redis.from_url(settings.REDIS_URL)
    try:
        r.ping()
    except redis.ConnectionError:
        pytest.fail(f"these tests need Redis at {settings.REDIS_URL} (make test starts none; .ci/run does)")
    r.flushdb()
    yield r
    r.flushdb()


def database_url() -> str:
    s = connection.settings_dict
    if s["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("worker tests share the test database with a worker process: they need PostgreSQL")
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


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


@pytest.fixture
def worker_roots(settings, tmp_path_factory) -> list[Path]:
    """Model roots the worker accepts: the configured ones and the tests' temporary folders."""
    return [*settings.ARENA_MODEL_ROOTS, tmp_path_factory.getbasetemp()]


@pytest.fixture
def worker(transactional_db, clean_redis, worker_roots):
    w = WorkerProcess(worker_roots).start()
    yield w
    w.stop()


def finished(run_id: int):
    """The run once it is done or failed, else None (a predicate for wait_for)."""
    from arena.evaluations.models import Run, State

    return Run.objects.filter(pk=run_id, state__in=[State.DONE, State.FAILED]).first()


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def token(team) -> str:
    """A member-role API token of the red team."""
    return ApiToken.issue(team, "ci")[1]


@pytest.fixture
def api(client, token):
    """Call the JSON API: api("post", "/entries", {...}); ``auth=None`` sends no token."""

    def call(method: str, path: str, body=None, auth=token):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {auth}"} if auth else {}
        kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
        return getattr(client, method)(f"/api/v1{path}", **kwargs, **headers)

    return call


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # PBKDF2's deliberate slowness costs seconds per test and proves nothing here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
