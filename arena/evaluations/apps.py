from django.apps import AppConfig


class EvaluationsConfig(AppConfig):
    name = "arena.evaluations"
    default_auto_field = "django.db.models.BigAutoField"
