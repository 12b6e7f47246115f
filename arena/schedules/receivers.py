"""What the schedules app does when something happens elsewhere."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from arena.evaluations.signals import run_finished
from arena.schedules.models import Schedule


@receiver(run_finished, dispatch_uid="arena.schedules.check_regressions")
def _check_regressions(sender, run, **kwargs) -> None:
    from arena.schedules.tasks import check_regressions

    transaction.on_commit(lambda: check_regressions.delay(run.pk))


@receiver(post_delete, sender=Schedule, dispatch_uid="arena.schedules.drop_beat_task")
def _drop_beat_task(sender, instance: Schedule, **kwargs) -> None:
    # However the schedule goes (its page, its team deleted), beat must stop firing it.
    task = PeriodicTask.objects.filter(pk=instance.periodic_task_id).first()
    if task is not None:
        crontab_id = task.crontab_id
        task.delete()
        CrontabSchedule.objects.filter(pk=crontab_id).delete()
