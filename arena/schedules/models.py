"""Scheduled evaluations, what each firing did, the team's notification settings, and regression alerts."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
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


class TeamNotifications(models.Model):
    """Where a team hears about regressions besides its owners' email."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="notifications")
    webhook_url = models.URLField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "team notifications"
        verbose_name_plural = "team notifications"

    def __str__(self) -> str:
        return f"notifications of {self.team}"


class RegressionAlert(models.Model):
    """A closed run checked for regressions, once; whom it tells is in its notices."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="regression_alert")
    regressed = models.PositiveIntegerField(default=0)
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


class Channel(models.TextChoices):
    EMAIL = "email", "Email to the team's owners"
    WEBHOOK = "webhook", "The team's webhook"


class Delivery(models.TextChoices):
    PENDING = "pending", "Not delivered yet"
    SENT = "sent", "Delivered"
    FAILED = "failed", "Given up"


class Notice(models.Model):
    """One regression alert told through one channel, at least once.

    Recorded with the alert, in its transaction, then sent by a task that retries with backoff until
    the channel takes it (a beat sweep sends again what a dead worker left). A send that succeeded
    but was not recorded is repeated under the same ``key``: the webhook's Idempotency-Key header,
    the email's Message-ID, so the receiver can drop the repeat.
    """

    alert = models.ForeignKey(RegressionAlert, on_delete=models.CASCADE, related_name="notices")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    target = models.JSONField(help_text="the owners' addresses, or the webhook URL, when the alert was recorded")
    key = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=10, choices=Delivery.choices, default=Delivery.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True, help_text="a worker is sending it until then")
    sent_at = models.DateTimeField(null=True, blank=True)
    status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="the webhook's last HTTP status")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["alert", "channel"], name="one_notice_per_channel")]
        ordering = ["alert", "channel"]

    def __str__(self) -> str:
        return f"{self.channel} notice of run {self.alert.run_id}: {self.state}"
