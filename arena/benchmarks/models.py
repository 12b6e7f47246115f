"""Suites and their items. A suite row is one immutable version, named by its content hash."""

from __future__ import annotations

from django.db import models

from arena.teams.models import Team


class Suite(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="suites")
    name = models.CharField(max_length=64)
    version = models.CharField(max_length=40)
    content_hash = models.CharField(max_length=64)
    task_type = models.CharField(max_length=20)
    description = models.TextField(blank=True)
    manifest = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    # Archived: off the boards and the run pickers; old runs still show it. Empty: active.
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "name", "version"], name="suite_version_unique"),
            models.UniqueConstraint(fields=["team", "content_hash"], name="suite_content_unique"),
        ]
        ordering = ["name", "-created_at"]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class SuiteItem(models.Model):
    suite = models.ForeignKey(Suite, on_delete=models.CASCADE, related_name="items")
    key = models.CharField(max_length=100, help_text="the item's id in the suite")
    split = models.CharField(max_length=20)
    position = models.PositiveIntegerField()
    data = models.JSONField(help_text="input, reference, choices, gold")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["suite", "key"], name="item_key_unique_per_suite")]
        indexes = [models.Index(fields=["suite", "split", "position"])]
        ordering = ["suite", "position"]

    def __str__(self) -> str:
        return self.key
