from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from arena.registry.models import BlendMember, Entry
from arena.registry.services import check_blend_members


class BlendMemberFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        """Members edited here pass the same team, cycle and depth checks as a registered blend's."""
        super().clean()
        blend = self.instance
        if any(self.errors) or blend.team_id is None:
            return  # the entry's own form or a member row already shows what is wrong
        members = [
            form.cleaned_data["member"]
            for form in self.forms
            if form.cleaned_data.get("member") and not form.cleaned_data.get("DELETE")
        ]
        if not members and not blend.is_blend:
            return
        try:
            check_blend_members(blend.team, blend, members)
        except ValidationError as exc:
            raise forms.ValidationError([m for msgs in exc.message_dict.values() for m in msgs]) from None


class BlendMemberInline(admin.TabularInline):
    model = BlendMember
    fk_name = "blend"
    formset = BlendMemberFormSet
    extra = 0


@admin.register(Entry)
class EntryAdmin(admin.ModelAdmin):
    list_display = ("name", "team", "kind", "strategy", "created_at")
    list_filter = ("kind", "team")
    exclude = ("secret",)
    inlines = [BlendMemberInline]
