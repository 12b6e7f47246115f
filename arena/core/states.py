"""The states of queued work (runs, judging, blend searches), for every app that asks whether it has finished.

Below the apps, so that one beneath evaluations (the registry, which refuses to change an entry that an
unfinished run uses) can ask without importing evaluations.
"""

from __future__ import annotations

from django.db import models


class State(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


TERMINAL = (State.DONE, State.FAILED)
