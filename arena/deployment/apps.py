from django.apps import AppConfig


class DeploymentConfig(AppConfig):
    name = "arena.deployment"
    default_auto_field = "django.db.models.BigAutoField"
