from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "arena.schedules"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from arena.schedules import receivers  # noqa: F401 - connects the signal receivers
