"""Scheduled evaluations, what each firing did, the team's notification settings, and regression alerts."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django_celery_beat.models import PeriodicTask

from arena.evaluations.models import Run, RunEntry
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
    STARTED = "started", "Run started"
    SKIPPED = "skipped", "Skipped"
    FAILED = "failed", "Failed"


class Firing(models.Model):
    """One firing of a schedule: at most one per cron slot, however often the trigger is delivered."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="firings")
    slot = models.DateTimeField(help_text="the time the cron expression named for this firing")
    run = models.OneToOneField(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="firing")
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.STARTED)
    note = models.TextField(blank=True, help_text="why nothing ran, or which entries were left out")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["schedule", "slot"], name="one_firing_per_slot")]
        ordering = ["-slot"]

    def __str__(self) -> str:
        return f"{self.schedule.name} at {self.slot:%Y-%m-%d %H:%M}: {self.outcome}"


class TeamNotifications(models.Model):
    """Where a team hears about regressions besides its owners' email."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="notifications")
    webhook_url = models.URLField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"notifications of {self.team}"


class RegressionAlert(models.Model):
    """A closed run checked for regressions, once, and whom it told."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="regression_alert")
    regressed = models.PositiveIntegerField(default=0)
    emailed = models.JSONField(default=list, blank=True)
    email_error = models.TextField(blank=True)
    webhook_status = models.PositiveSmallIntegerField(null=True, blank=True)
    webhook_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.regressed} regressed in run {self.run_id}"


class Regression(models.Model):
    """An entry whose result in a run fell below its previous one by more than the interval allows."""

    alert = models.ForeignKey(RegressionAlert, on_delete=models.CASCADE, related_name="regressions")
    run_entry = models.OneToOneField(RunEntry, on_delete=models.CASCADE, related_name="regression")
    previous_run = models.ForeignKey(Run, null=True, on_delete=models.SET_NULL, related_name="+")
    score = models.FloatField()
    previous_score = models.FloatField()
    delta = models.FloatField()
    delta_low = models.FloatField()
    delta_high = models.FloatField()
    method = models.CharField(max_length=10)

    def __str__(self) -> str:
        return f"{self.run_entry}: {self.delta:+.3f}"
