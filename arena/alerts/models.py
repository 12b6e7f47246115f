"""Regression alerts: a closed run checked once, the entries that regressed, and the notices that tell the team.

The tables are named ``schedules_*``, as they were first created: renaming a live table buys nothing.
"""

from __future__ import annotations

from django.db import models

from arena.evaluations.models import Run, RunEntry
from arena.teams.models import Team


class TeamNotifications(models.Model):
    """Where a team hears about regressions besides its owners' email."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="notifications")
    webhook_url = models.URLField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "schedules_teamnotifications"
        verbose_name = "team notifications"
        verbose_name_plural = "team notifications"

    def __str__(self) -> str:
        return f"notifications of {self.team}"


class RegressionAlert(models.Model):
    """A closed run checked for regressions, once; whom it tells is in its notices."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="regression_alert")
    regressed = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "schedules_regressionalert"

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

    class Meta:
        db_table = "schedules_regression"

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
        db_table = "schedules_notice"
        constraints = [models.UniqueConstraint(fields=["alert", "channel"], name="one_notice_per_channel")]
        ordering = ["alert", "channel"]

    def __str__(self) -> str:
        return f"{self.channel} notice of run {self.alert.run_id}: {self.state}"
