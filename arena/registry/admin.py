from django.contrib import admin

from arena.registry.models import BlendMember, Entry


class BlendMemberInline(admin.TabularInline):
    model = BlendMember
    fk_name = "blend"
    extra = 0


@admin.register(Entry)
class EntryAdmin(admin.ModelAdmin):
    list_display = ("name", "team", "kind", "strategy", "created_at")
    list_filter = ("kind", "team")
    exclude = ("secret",)
    inlines = [BlendMemberInline]
