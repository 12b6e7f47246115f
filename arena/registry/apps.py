from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "arena.registry"
    default_auto_field = "django.db.models.BigAutoField"
