"""Model entries (hf, gguf, openai, merge) and blends (a strategy over member entries)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from arena.teams.models import Team


class Kind(models.TextChoices):
    HF = "hf", "Transformers directory"
    GGUF = "gguf", "GGUF file"
    OPENAI = "openai", "OpenAI-compatible endpoint"
    MERGE = "merge", "Merge recipe"
    BLEND = "blend", "Blend"


MODEL_KINDS = (Kind.HF, Kind.GGUF, Kind.OPENAI, Kind.MERGE)


class Entry(models.Model):
    """Anything that can sit on a leaderboard: a single model or a blend of entries."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="entries")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    description = models.TextField(blank=True)
    # Backend config, merge recipe, or nothing for blends. Never holds a secret.
    config = models.JSONField(default=dict, blank=True)
    # Endpoint API key, encrypted with a key derived from SECRET_KEY; never shown again.
    secret = models.TextField(blank=True)
    strategy = models.CharField(max_length=60, blank=True)
    params = models.JSONField(default=dict, blank=True)
    members = models.ManyToManyField("self", through="BlendMember", symmetrical=False, related_name="blends")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    # Archived: off the boards, the run pickers and /v1's list; old runs still show it. Empty: active.
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="entry_name_unique_per_team")]
        ordering = ["name"]
        verbose_name_plural = "entries"

    def __str__(self) -> str:
        return self.name

    @property
    def is_blend(self) -> bool:
        return self.kind == Kind.BLEND

    @property
    def label(self) -> str:
        """What the leaderboard's kind filter shows: the strategy for blends, the kind otherwise."""
        return self.strategy if self.is_blend else self.kind

    def ordered_members(self) -> list[Entry]:
        return [bm.member for bm in self.member_links.select_related("member").order_by("position")]


class BlendMember(models.Model):
    blend = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="member_links")
    # A member used by a blend cannot be deleted alone; deleting both at once (their team) may.
    member = models.ForeignKey(Entry, on_delete=models.RESTRICT, related_name="blend_links")
    position = models.PositiveSmallIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blend", "member"], name="member_once_per_blend"),
            models.UniqueConstraint(fields=["blend", "position"], name="member_position_unique"),
        ]
        ordering = ["blend", "position"]

    def __str__(self) -> str:
        return f"{self.member} in {self.blend}"


class MergeState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Materialization(models.Model):
    """A merge entry's weights: built on the gpu queue into a directory, then run as an hf model."""

    entry = models.OneToOneField(Entry, on_delete=models.CASCADE, related_name="materialization")
    state = models.CharField(max_length=10, choices=MergeState.choices, default=MergeState.QUEUED)
    reason = models.TextField(blank=True, help_text="why it failed")
    # Each (re)start counts one up; a task carries the attempt it was sent for, so a stale
    # delivery of an earlier attempt changes nothing.
    attempt = models.PositiveIntegerField(default=1)
    path = models.CharField(max_length=500, blank=True, help_text="the merged safetensors directory, once done")
    provenance = models.JSONField(default=dict, blank=True, help_text="member fingerprints, mergekit version")
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.entry} ({self.state})"
