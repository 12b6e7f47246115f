"""The arena's settings under pytest: with pytest-xdist, each worker has its own Redis database and data directory.

pytest-django imports this module before any conftest runs, which makes it the one place where a worker
can still change what arena.settings reads. The worker's values go into the environment, so the processes
that tests start (Celery workers, beat, daphne, `manage.py`) inherit them and read arena.settings itself.
(The test database needs nothing here: pytest-django gives each worker its own, test_<name>_gw<N>.)
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REDIS_DATABASES = 16  # redis-server's default `databases`


def _use_worker_resources(worker: str) -> None:
    """Redis database REDIS_URL's + N and data directory <ARENA_DATA_DIR>/xdist/gwN for worker gwN."""
    index = int(worker.removeprefix("gw"))
    url = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    db = int(url.path.strip("/") or 0) + index
    if db >= REDIS_DATABASES:
        raise RuntimeError(
            f"pytest-xdist worker {worker} would use Redis db {db}: lower REDIS_URL's db or use fewer workers"
        )
    os.environ["REDIS_URL"] = urlunsplit(url._replace(path=f"/{db}"))

    shared = Path(os.environ.get("ARENA_DATA_DIR") or Path(__file__).resolve().parents[1] / "data").resolve()
    own = shared / "xdist" / worker
    own.mkdir(parents=True, exist_ok=True)
    # Every worker reads the model files `make test` fetched once into the shared directory.
    models = own / "models"
    if not models.is_symlink() and not models.exists():
        models.symlink_to(shared / "models", target_is_directory=True)
    os.environ["ARENA_DATA_DIR"] = str(own)


if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    _use_worker_resources(worker)
    # The processes this worker's tests start read the arena's own settings, with the values above in
    # their environment (reading this module again would add the worker's offset twice).
    os.environ["DJANGO_SETTINGS_MODULE"] = "arena.settings"

from arena.settings import *  # noqa: E402, F403
