from django.contrib import admin

from arena.serving.models import ShadowConfig, ShadowSample


class ReadOnly(admin.ModelAdmin):
    # Shadows are set on the entry's page or through the API, which check the team; here they are read.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ShadowConfig)
class ShadowConfigAdmin(ReadOnly):
    list_display = ("entry", "shadow", "rate", "judge", "updated_by", "updated_at")


@admin.register(ShadowSample)
class ShadowSampleAdmin(ReadOnly):
    list_display = ("pk", "entry", "shadow", "state", "agree", "preferred", "created_at")
    list_filter = ("state", "agree", "preferred")
