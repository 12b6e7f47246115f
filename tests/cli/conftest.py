"""Run the `arena` command as a subprocess against a real arena: pytest-django's live server."""

from __future__ import annotations

import os

import pytest

from tests.cli.helpers import Result, run_cli


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """An environment with no arena settings and an empty config home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARENA_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), COLUMNS="200", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def arena(live_server, token, cli_env):
    """arena("entries", "list") runs the command against the live server with the team's token."""

    def call(*args: str, token: str = token, timeout: float = 60) -> Result:
        return run_cli(*args, env={**cli_env, "ARENA_URL": live_server.url, "ARENA_TOKEN": token}, timeout=timeout)

    return call
