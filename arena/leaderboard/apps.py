from django.apps import AppConfig


class LeaderboardConfig(AppConfig):
    name = "arena.leaderboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from arena.leaderboard import receivers  # noqa: F401 - connects the signal receivers
