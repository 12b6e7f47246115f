from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "arena.registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from arena.registry import receivers  # noqa: F401 - connects the signal receivers
