from django.contrib import admin

from arena.search.models import BlendSearch


@admin.register(BlendSearch)
class BlendSearchAdmin(admin.ModelAdmin):
    list_display = ("pk", "team", "run", "budget_metric", "budget", "state", "candidates_evaluated", "seconds")
    list_filter = ("state", "budget_metric")
    readonly_fields = ("results", "registered")
