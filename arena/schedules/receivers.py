"""What the schedules app does when something happens elsewhere."""

from __future__ import annotations

from django.db.models.signals import post_delete
from django.dispatch import receiver
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from arena.schedules.models import Schedule


@receiver(post_delete, sender=Schedule, dispatch_uid="arena.schedules.drop_beat_task")
def _drop_beat_task(sender, instance: Schedule, **kwargs) -> None:
    # However the schedule goes (its page, its team deleted), beat must stop firing it.
    task = PeriodicTask.objects.filter(pk=instance.periodic_task_id).first()
    if task is not None:
        crontab_id = task.crontab_id
        task.delete()
        CrontabSchedule.objects.filter(pk=crontab_id).delete()
