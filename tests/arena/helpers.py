"""Suites and moments that several of the arena's test modules build on."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from arena.core.states import TERMINAL
from arena.evaluations.models import EntryState, Run, Score, State
from ensembles import stats
from ensembles.suites import Suite as LibSuite
from ensembles.suites import load_suite
from tests.factories import RunEntryFactory, RunFactory

NIGHT = datetime(2026, 3, 10, 2, 0, 3, tzinfo=UTC)  # three seconds after a nightly 02:00 UTC slot


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# A suite as a team uploads it: its manifest and its items, one file each.
MANIFEST = """\
name: capitals
version: "1"
task_type: generation
prompt_template: "Q: {input}\\nA:"
answer_extraction: first_line
metric: exact_match
"""
ITEMS = jsonl(
    {"id": "fr", "input": "Capital of France?", "reference": "Paris", "split": "dev"},
    {"id": "de", "input": "Capital of Germany?", "reference": "Berlin", "split": "test"},
    {"id": "it", "input": "Capital of Italy?", "reference": "Rome", "split": "test"},
)

# Open questions with no reference: a judge compares the answers.
JUDGE_MANIFEST = """\
name: open-questions
version: "1"
task_type: judge
prompt_template: "{input}"
answer_extraction: text
metric: judge
max_new_tokens: 8
"""
QUESTIONS = ["Name a colour.", "Say hello.", "Count to three.", "Name a fruit."]


def judge_suite() -> LibSuite:
    return load_suite(
        JUDGE_MANIFEST, jsonl(*({"id": f"q{i}", "input": q, "split": "test"} for i, q in enumerate(QUESTIONS)))
    )


def done_result(run, entry, fingerprint: str):
    """``entry``'s finished result in ``run``, computed by the model ``fingerprint`` names (what a
    schedule's refresh rule compares with the model's fingerprint now)."""
    return RunEntryFactory(run=run, entry=entry, fingerprint=fingerprint, score=0.5, ci_low=0.3, ci_high=0.7, n=6)


def scored_run(suite, results: dict, *, state=State.DONE, entry_state=EntryState.DONE, at=None) -> Run:
    """A run on the suite's test items in which each entry scored ``results[entry]``, item by item in
    order, with its mean and bootstrap interval; ``at``: when it started (and finished, if it did)."""
    run = RunFactory(suite=suite, state=state, started_at=at)
    if at is not None and state in TERMINAL:
        Run.objects.filter(pk=run.pk).update(finished_at=at)
    items = list(suite.items.filter(split="test").order_by("position"))
    for entry, values in results.items():
        interval = stats.bootstrap_mean(values, seed=run.pk)
        RunEntryFactory(
            run=run,
            entry=entry,
            state=entry_state,
            total_items=len(values),
            done_items=len(values),
            score=interval.mean if entry_state == EntryState.DONE else None,
            ci_low=interval.low,
            ci_high=interval.high,
            n=interval.n,
        )
        Score.objects.bulk_create(
            Score(run=run, entry=entry, item=item, prediction="", value=value)
            for item, value in zip(items, values, strict=False)
        )
    return run
