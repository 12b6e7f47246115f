"""Shadow comparison: a served entry names a shadow, and a sampled share of its live /v1 requests is
answered by the shadow too, in the background, so a team sees the evidence before switching traffic."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from arena.core.states import State
from arena.registry.models import Entry


class ShadowConfig(models.Model):
    """The entry's shadow and the share of its live chat requests the shadow also answers."""

    entry = models.OneToOneField(Entry, on_delete=models.CASCADE, primary_key=True, related_name="shadow_config")
    shadow = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="shadowing")
    rate = models.FloatField(help_text="the share of live requests sampled, 0 to 1")
    # A single model comparing the two answers in both orders (ensembles.judge); none: agreement and cost only.
    judge = models.ForeignKey(Entry, null=True, blank=True, on_delete=models.SET_NULL, related_name="shadow_judging")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(rate__gte=0.0, rate__lte=1.0), name="shadow_rate_in_0_1"),
            models.CheckConstraint(condition=~models.Q(shadow=models.F("entry")), name="shadow_is_another_entry"),
        ]

    def __str__(self) -> str:
        return f"{self.shadow} shadowing {self.entry} at {self.rate:g}"


class Preference(models.TextChoices):
    ENTRY = "entry", "the entry's answer"
    SHADOW = "shadow", "the shadow's answer"
    TIE = "tie", "a tie"


class ShadowSample(models.Model):
    """One live request answered by both: the two answers, whether they agree, each side's cost and latency."""

    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="shadow_samples")
    shadow = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="shadowed_samples")
    judge = models.ForeignKey(Entry, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    error = models.TextField(blank=True)
    # The request as the client sent it (validated), so the shadow answers exactly that.
    request = models.JSONField()
    prompt_digest = models.CharField(max_length=64)
    prompt = models.TextField(help_text="the prompt, a conversation as its transcript")
    entry_answer = models.TextField()
    shadow_answer = models.TextField(blank=True)
    # Compared as votes are (ensembles.answers.vote_key) on each answer's first line; null until answered.
    agree = models.BooleanField(null=True)
    entry_tokens = models.PositiveIntegerField(default=0)
    entry_calls = models.PositiveIntegerField(default=0)
    entry_compute_s = models.FloatField(default=0.0)
    entry_latency_s = models.FloatField(default=0.0)
    # In US dollars where every model that answered has prices (Entry.config), else null.
    entry_usd = models.FloatField(null=True, blank=True)
    shadow_tokens = models.PositiveIntegerField(null=True, blank=True)
    shadow_calls = models.PositiveIntegerField(null=True, blank=True)
    shadow_compute_s = models.FloatField(null=True, blank=True)
    shadow_latency_s = models.FloatField(null=True, blank=True)
    shadow_usd = models.FloatField(null=True, blank=True)
    # The judge's verdicts with the entry's answer shown first ("forward") and second ("swapped").
    verdict_forward = models.CharField(max_length=4, blank=True)
    verdict_swapped = models.CharField(max_length=4, blank=True)
    preferred = models.CharField(max_length=10, choices=Preference.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["entry", "shadow", "state"], name="shadow_sample_by_pair")]

    def __str__(self) -> str:
        return f"shadow sample {self.pk}: {self.entry_id} vs {self.shadow_id}"
