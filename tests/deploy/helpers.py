"""The scaled-out deployment as data: where its files are, and how `docker compose` reads them."""

from __future__ import annotations

import re
import shlex

from tests.helpers import ROOT

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]

# `$$` is a literal dollar; `${NAME}`, `${NAME-default}` and `${NAME:-default}` take the default,
# as docker compose does with nothing set in the environment or docker/.env.
_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value):
    if isinstance(value, str):
        return _INTERPOLATION.sub(
            lambda match: "$" if match.group(0) == "$$" else (match.group("default") or ""), value
        )
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def argv_lines(command) -> list[list[str]]:
    """The command lines a service runs: its argv, or each `&&` step of an `sh -c` script."""
    if isinstance(command, str):
        command = shlex.split(command)
    if command[:2] == ["sh", "-c"]:
        return [shlex.split(step) for step in command[2].split("&&")]
    return [list(command)]


def is_arena(service: dict) -> bool:
    """A service running the arena's own image (not postgres or redis)."""
    return "build" in service
