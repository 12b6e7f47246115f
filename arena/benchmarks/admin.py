from django.contrib import admin

from arena.benchmarks.models import Suite


@admin.register(Suite)
class SuiteAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "team", "task_type", "created_at")
    readonly_fields = ("content_hash",)
