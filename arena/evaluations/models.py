"""Runs, their per-entry progress and results, work items, the generation cache and scores."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from arena.benchmarks.models import Suite, SuiteItem
from arena.core.states import FINISHED, TERMINAL, State  # noqa: F401 (apps above evaluations read both from here)
from arena.registry.models import Entry
from arena.teams.models import Team


class EntryState(models.TextChoices):
    """An entry's way through a run (arena/evaluations/pipeline): its answers generated or combined while
    running, then scored (every answer has its score), then done once aggregated, or failed."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SCORED = "scored", "Scored"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Run(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="runs")
    suite = models.ForeignKey(Suite, on_delete=models.PROTECT, related_name="runs")
    splits = models.JSONField(default=list)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    error = models.TextField(blank=True)
    # Library versions, git revision and the exact configuration that produced the results.
    provenance = models.JSONField(default=dict, blank=True)
    # Judge suites: the model that compares answers, how far judging went, and its ratings.
    judge = models.ForeignKey(Entry, null=True, blank=True, on_delete=models.SET_NULL, related_name="judged_runs")
    judge_state = models.CharField(max_length=10, choices=State.choices, blank=True, default="")
    # Judge runs: the judge's usage and ratings. Other runs: what is computed once after they finish
    # (the ensemble-size curve, stored by the run's analyse step).
    results = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"run {self.pk} on {self.suite}"

    @property
    def report_split(self) -> str:
        """The split the leaderboard reports: test when the run has it."""
        return "test" if "test" in self.splits else self.splits[0]

    @property
    def finished(self) -> bool:
        """Closed with results: done, or finished with errors (its failed entries aside)."""
        return self.state in FINISHED


class RunEntry(models.Model):
    """One entry's progress and result within a run."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="run_entries")
    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="run_entries")
    is_target = models.BooleanField(default=True, help_text="chosen for the run, not only a blend's member")
    state = models.CharField(max_length=10, choices=EntryState.choices, default=EntryState.QUEUED)
    error = models.TextField(blank=True)
    fingerprint = models.CharField(max_length=120, blank=True)
    total_items = models.PositiveIntegerField(default=0)
    done_items = models.PositiveIntegerField(default=0)
    new_calls = models.PositiveIntegerField(default=0, help_text="generations computed (not cached) in this run")
    # Result on the run's report split.
    score = models.FloatField(null=True, blank=True)
    ci_low = models.FloatField(null=True, blank=True)
    ci_high = models.FloatField(null=True, blank=True)
    n = models.PositiveIntegerField(default=0)
    best_member = models.ForeignKey(Entry, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    lift = models.FloatField(null=True, blank=True)
    lift_low = models.FloatField(null=True, blank=True)
    lift_high = models.FloatField(null=True, blank=True)
    lift_p = models.FloatField(null=True, blank=True, help_text="McNemar's exact p-value, binary metrics only")
    member_calls = models.PositiveIntegerField(default=0)
    tokens = models.PositiveIntegerField(default=0)
    compute_s = models.FloatField(default=0.0)
    latency_p50 = models.FloatField(null=True, blank=True)
    latency_p95 = models.FloatField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "entry"], name="entry_once_per_run")]
        ordering = ["run", "entry__name"]

    def __str__(self) -> str:
        return f"{self.entry} in {self.run}"


class WorkItem(models.Model):
    """One batch of items for one model; claimed with a conditional update."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="work_items")
    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="+")
    batch_index = models.PositiveIntegerField()
    item_ids = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "entry", "batch_index"], name="batch_once_per_run_entry")]
        indexes = [models.Index(fields=["run", "entry", "state"])]

    def __str__(self) -> str:
        return f"batch {self.batch_index} of {self.entry} in run {self.run_id}"


class Generation(models.Model):
    """A member's output, cached by content: hash of (fingerprint, prompt, decoding params)."""

    key = models.CharField(max_length=64, unique=True)
    fingerprint = models.CharField(max_length=120, db_index=True)
    prompt = models.TextField()
    params = models.JSONField()
    text = models.TextField()
    token_logprobs = models.JSONField(default=list)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_s = models.FloatField(default=0.0)
    # "stop" or "length" (see ensembles' Generation); blank on rows made before it was recorded.
    finish_reason = models.CharField(max_length=8, blank=True, default="")
    tokens = models.JSONField(default=list, blank=True)  # each completion token's text
    top_logprobs = models.JSONField(default=list, blank=True)  # per token, [[token, logprob], ...]
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key[:12]

    @property
    def mean_logprob(self) -> float | None:
        lps = self.token_logprobs or []
        return sum(lps) / len(lps) if lps else None


class Score(models.Model):
    """One entry's scored answer to one item in one run."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="scores")
    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="scores")
    item = models.ForeignKey(SuiteItem, on_delete=models.CASCADE, related_name="scores")
    generation = models.ForeignKey(Generation, null=True, blank=True, on_delete=models.SET_NULL)
    prediction = models.TextField()
    value = models.FloatField()
    details = models.JSONField(default=dict, blank=True)
    member_calls = models.PositiveIntegerField(default=0)
    tokens = models.PositiveIntegerField(default=0)
    compute_s = models.FloatField(default=0.0)
    latency_s = models.FloatField(default=0.0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "entry", "item"], name="one_score_per_item")]
        indexes = [models.Index(fields=["run", "entry"])]

    def __str__(self) -> str:
        return f"{self.entry} on {self.item}: {self.value}"


class Comparison(models.Model):
    """A judge's verdicts on two entries' answers to one item, shown in both orders."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="comparisons")
    item = models.ForeignKey(SuiteItem, on_delete=models.CASCADE, related_name="+")
    first = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="+")
    second = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="+")
    forward = models.CharField(max_length=4, blank=True, help_text="verdict with first shown as A: A, B, tie")
    swapped = models.CharField(max_length=4, blank=True, help_text="verdict with first shown as B")
    outcome = models.CharField(max_length=6, blank=True, help_text="first, second, tie; blank when unreadable")
    forward_generation = models.ForeignKey(Generation, null=True, on_delete=models.SET_NULL, related_name="+")
    swapped_generation = models.ForeignKey(Generation, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "item", "first", "second"], name="one_comparison_per_pair")
        ]

    def __str__(self) -> str:
        return f"{self.first_id} vs {self.second_id} on {self.item_id}: {self.outcome or '?'}"
