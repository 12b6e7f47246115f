"""The scaled-out deployment as data: docker/compose.yaml loaded the way `docker compose` reads it."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.helpers import COMPOSE, interpolate


@pytest.fixture(scope="session")
def compose() -> dict:
    # safe_load resolves the `<<: *anchor` merge keys the file uses, as compose does.
    return interpolate(yaml.safe_load(COMPOSE.read_text()))
