"""What the alerts app does when something happens elsewhere."""

from __future__ import annotations

from django.dispatch import receiver

from arena.core import queue
from arena.evaluations.signals import run_finished


@receiver(run_finished, dispatch_uid="arena.alerts.check_regressions")
def _check_regressions(sender, run, **kwargs) -> None:
    queue.send_on_commit("arena.alerts.tasks.check_regressions", run.pk)
