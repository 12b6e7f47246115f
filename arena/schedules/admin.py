from django.contrib import admin

from arena.schedules.models import Firing, RegressionAlert, Schedule, TeamNotifications


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = ("name", "team", "suite_name", "cron", "timezone", "refresh", "enabled")
    list_filter = ("enabled", "refresh")


@admin.register(Firing)
class FiringAdmin(admin.ModelAdmin):
    list_display = ("schedule", "slot", "outcome", "run", "note")
    list_filter = ("outcome",)


@admin.register(RegressionAlert)
class RegressionAlertAdmin(admin.ModelAdmin):
    list_display = ("run", "regressed", "webhook_status", "created_at")


@admin.register(TeamNotifications)
class TeamNotificationsAdmin(admin.ModelAdmin):
    list_display = ("team", "webhook_url", "updated_at")
