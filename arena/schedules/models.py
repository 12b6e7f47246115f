"""Scheduled evaluations and what each firing did."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_celery_beat.models import PeriodicTask

from arena.evaluations.models import Run
from arena.registry.models import Entry
from arena.teams.models import Team

NIGHTLY = "0 2 * * *"


class Refresh(models.TextChoices):
    CHANGED = "changed", "Only entries whose model or suite version changed"
    ALL = "all", "Every chosen entry"


class Schedule(models.Model):
    """Evaluate chosen entries on the latest version of a suite whenever a cron expression fires.

    Beat reads the schedule from its own PeriodicTask (django-celery-beat), which this row owns:
    they are created, changed and deleted together.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=100)
    suite_name = models.CharField(max_length=64, help_text="evaluated on the latest version at each firing")
    entries = models.ManyToManyField(Entry, related_name="schedules")
    judge = models.ForeignKey(Entry, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    cron = models.CharField(max_length=120, default=NIGHTLY, help_text="minute hour day-of-month month day-of-week")
    timezone = models.CharField(max_length=64, default="UTC")
    refresh = models.CharField(max_length=10, choices=Refresh.choices, default=Refresh.CHANGED)
    splits = models.JSONField(
        default=list, blank=True, help_text="the splits each run evaluates; empty: the suite's default (test)"
    )
    enabled = models.BooleanField(default=True)
    periodic_task = models.OneToOneField(PeriodicTask, on_delete=models.CASCADE, related_name="arena_schedule")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="schedule_name_unique_per_team")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.cron} {self.timezone})"


class Outcome(models.TextChoices):
    PENDING = "pending", "Waiting for a worker"
    STARTED = "started", "Run started"
    SKIPPED = "skipped", "Skipped"
    FAILED = "failed", "Failed"


class Firing(models.Model):
    """One firing of a schedule: at most one per cron slot, however often the trigger is delivered;
    or one asked for by hand ("Run now"), whose slot is the moment it was asked."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="firings")
    slot = models.DateTimeField(help_text="the time the cron expression named for this firing")
    run = models.OneToOneField(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="firing")
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.STARTED)
    note = models.TextField(blank=True, help_text="why nothing ran, or which entries were left out")
    manual = models.BooleanField(default=False, help_text="asked for by hand, not by the cron expression")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["schedule", "slot"], condition=Q(manual=False), name="one_firing_per_slot")
        ]
        ordering = ["-slot"]

    def __str__(self) -> str:
        return f"{self.schedule.name} at {self.slot:%Y-%m-%d %H:%M}: {self.outcome}"
