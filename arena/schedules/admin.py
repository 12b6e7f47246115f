from django.contrib import admin

from arena.schedules.models import Firing, Schedule


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = ("name", "team", "suite_name", "cron", "timezone", "refresh", "enabled")
    list_filter = ("enabled", "refresh")


@admin.register(Firing)
class FiringAdmin(admin.ModelAdmin):
    list_display = ("schedule", "slot", "manual", "outcome", "run", "note")
    list_filter = ("outcome", "manual")
