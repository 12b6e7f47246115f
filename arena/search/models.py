"""Blend searches: which blends of a finished run's members are worth registering, found on dev alone."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from arena.evaluations.models import Run, State
from arena.teams.models import Team


class CostMetric(models.TextChoices):
    CALLS = "calls", "model calls per item"
    TOKENS = "tokens", "tokens per item"
    SECONDS = "seconds", "compute seconds per item"


class BlendSearch(models.Model):
    """One search over a run's stored member answers; ``results`` holds every candidate and the Pareto set."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="blend_searches")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="blend_searches")
    members = models.JSONField(default=list, help_text="entry names, in the order found blends list them")
    budget_metric = models.CharField(max_length=10, choices=CostMetric.choices, default=CostMetric.CALLS)
    budget = models.FloatField(null=True, blank=True, help_text="per item, in budget_metric; empty: no limit")
    folds = models.PositiveSmallIntegerField(default=5)
    seed = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    error = models.TextField(blank=True)
    candidates_total = models.PositiveIntegerField(default=0)
    candidates_evaluated = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(null=True, blank=True, help_text="wall time the search itself took")
    results = models.JSONField(default=dict, blank=True)
    # Candidate index (as a string: JSON keys) -> the name of the blend registered from it.
    registered = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "blend searches"

    def __str__(self) -> str:
        return f"blend search {self.pk} on run {self.run_id}"
