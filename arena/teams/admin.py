from django.contrib import admin

from arena.teams.models import ApiToken, Invitation, Membership, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")
    inlines = [MembershipInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "team", "prefix", "role", "created_at", "expires_at", "last_used_at")
    readonly_fields = ("digest", "prefix", "last_used_at")

    def has_add_permission(self, request) -> bool:
        # A token is issued on the team admin page, which shows its plain text once; here it would have none.
        return False


admin.site.register(Invitation)
