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
    # A run some of whose entries failed: what finished is scored and analysed, and the failed ones can be retried.
    PARTIAL = "partial", "Finished with errors"


TERMINAL = (State.DONE, State.PARTIAL, State.FAILED)
# Closed with results to read: boards, analysis, blend search and served blends use these runs.
FINISHED = (State.DONE, State.PARTIAL)
