from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "arena.alerts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from arena.alerts import receivers  # noqa: F401 - connects the signal receivers
