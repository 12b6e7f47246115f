from django.db import migrations
from django.utils import timezone

OLD_TASK, NEW_TASK = "arena.schedules.tasks.resend_overdue", "arena.alerts.tasks.resend_overdue"
OLD_NAME = "Send again regression notices and manual firings a lost message left waiting"
NEW_NAME = "Send again regression notices a lost message left waiting"
MODELS = ("notice", "regression", "regressionalert", "teamnotifications")


def _beat_reloads(apps):
    # A running beat reads its schedule again only when this timestamp moves.
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def _move(apps, task: tuple[str, str], name: tuple[str, str], label: tuple[str, str]) -> None:
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(task=task[0]).update(task=task[1])
    PeriodicTask.objects.filter(name=name[0]).update(name=name[1])
    _beat_reloads(apps)
    # The models' permissions and admin history follow them (a fresh database has no content types yet).
    ContentType = apps.get_model("contenttypes", "ContentType")
    taken = set(ContentType.objects.filter(app_label=label[1], model__in=MODELS).values_list("model", flat=True))
    ContentType.objects.filter(app_label=label[0], model__in=set(MODELS) - taken).update(app_label=label[1])


def forwards(apps, schema_editor):
    _move(apps, (OLD_TASK, NEW_TASK), (OLD_NAME, NEW_NAME), ("schedules", "alerts"))


def backwards(apps, schema_editor):
    _move(apps, (NEW_TASK, OLD_TASK), (NEW_NAME, OLD_NAME), ("alerts", "schedules"))


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0001_initial"),
        ("schedules", "0003_resend_overdue_every_minute"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
