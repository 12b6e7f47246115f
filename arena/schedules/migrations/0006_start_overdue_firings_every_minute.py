from django.db import migrations
from django.utils import timezone

TASK = "arena.schedules.tasks.start_overdue_firings"


def _beat_reloads(apps):
    # A running beat reads its schedule again only when this timestamp moves.
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.get_or_create(
        name="Start manual firings a lost message left waiting",
        defaults={"task": TASK, "interval": every, "queue": "cpu"},
    )
    _beat_reloads(apps)


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(task=TASK).delete()
    _beat_reloads(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("schedules", "0005_alerts_own_their_models"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(schedule, unschedule)]
