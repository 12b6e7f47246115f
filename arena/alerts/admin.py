from django.contrib import admin

from arena.alerts.models import Notice, RegressionAlert, TeamNotifications


class NoticeInline(admin.TabularInline):
    model = Notice
    fields = ("channel", "state", "attempts", "sent_at", "status", "error", "key")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(RegressionAlert)
class RegressionAlertAdmin(admin.ModelAdmin):
    list_display = ("run", "regressed", "created_at")
    inlines = [NoticeInline]


@admin.register(Notice)
class NoticeAdmin(admin.ModelAdmin):
    list_display = ("alert", "channel", "state", "attempts", "sent_at", "status", "created_at")
    list_filter = ("channel", "state")


@admin.register(TeamNotifications)
class TeamNotificationsAdmin(admin.ModelAdmin):
    list_display = ("team", "webhook_url", "updated_at")
