"""Run the `arena` command as a subprocess against a real arena: pytest-django's live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# The personas, the team, its token and a real worker, as the arena's own tests have them.
from tests.arena.conftest import (  # noqa: F401
    clean_redis,
    fast_password_hashing,
    outsider,
    owner,
    team,
    teammate,
    token,
    viewer,
    worker,
    worker_roots,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    @property
    def error(self) -> dict:
        """The JSON error a command prints on stderr under --json."""
        return json.loads(self.stderr.strip().splitlines()[-1])["error"]


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "arena_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """An environment with no arena settings and an empty config home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARENA_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), COLUMNS="200", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def arena(live_server, token, cli_env):  # noqa: F811 - the imported fixture
    """arena("entries", "list") runs the command against the live server with the team's token."""

    def call(*args: str, token: str = token, timeout: float = 60) -> Result:
        return run_cli(*args, env={**cli_env, "ARENA_URL": live_server.url, "ARENA_TOKEN": token}, timeout=timeout)

    return call
