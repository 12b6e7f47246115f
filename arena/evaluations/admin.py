from django.contrib import admin

from arena.evaluations.models import Run, RunEntry, WorkItem


class RunEntryInline(admin.TabularInline):
    model = RunEntry
    extra = 0
    fields = ("entry", "state", "done_items", "total_items", "score", "error")
    readonly_fields = fields


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("pk", "team", "suite", "state", "created_at", "finished_at")
    list_filter = ("state",)
    inlines = [RunEntryInline]


@admin.register(WorkItem)
class WorkItemAdmin(admin.ModelAdmin):
    list_display = ("pk", "run", "entry", "batch_index", "state", "attempts")
    list_filter = ("state",)
