"""The run's item table and the item drill-down, on stored results."""

from __future__ import annotations

import pytest

from arena.evaluations.events import changed
from arena.evaluations.models import Generation, Run, Score, State
from arena.registry.models import Entry
from tests.factories import BlendFactory, EntryFactory, RunEntryFactory, RunFactory, SuiteFactory
from tests.helpers import csrf_client, post_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_run(team):
    suite = SuiteFactory(team=team, size=4)
    a = EntryFactory(team=team, name="a")
    b = EntryFactory(team=team, name="b")
    vote = BlendFactory(team=team, name="vote", members=[a, b])
    run = RunFactory(suite=suite)
    items = list(suite.items.filter(split="test"))
    for entry in (a, b, vote):
        RunEntryFactory(run=run, entry=entry, total_items=2, done_items=2)
    for n, item in enumerate(items):
        for entry, text, value in ((a, "41", 0.0), (b, item.data["reference"], 1.0)):
            generation = Generation.objects.create(
                key=f"{entry.pk}-{n}",
                fingerprint=entry.name,
                prompt="p",
                params={},
                text=text,
                token_logprobs=[-0.5, -1.5],
            )
            Score.objects.create(run=run, entry=entry, item=item, generation=generation, prediction=text, value=value)
        Score.objects.create(
            run=run,
            entry=vote,
            item=item,
            prediction=item.data["reference"],
            value=1.0 if n else 0.0,
            details={"votes": {"41": 1, item.data["reference"]: 1}, "tied": True},
        )
    return run, items


def test_the_dashboard_starts_a_run_on_the_splits_ticked_and_shows_a_bad_choice_in_the_form(owner, team, finished_run):
    run, _ = finished_run
    client = csrf_client(owner)
    form = client.get(f"/t/{team.slug}/").content.decode()
    # Every split the suite has is offered; test alone is ticked, as a run without a choice gets.
    assert '<input type="checkbox" name="splits" value="test" checked>' in form
    assert '<input type="checkbox" name="splits" value="dev">' in form
    a = Entry.objects.get(team=team, name="a")

    started = post_form(
        client, f"/t/{team.slug}/runs/", {"suite": run.suite.pk, "entries": [a.pk], "splits": ["dev", "test"]}
    )
    new = Run.objects.exclude(pk=run.pk).get()
    assert started.status_code == 302 and started["Location"] == f"/t/{team.slug}/runs/{new.pk}/"
    assert sorted(new.splits) == ["dev", "test"]

    refused = post_form(
        client, f"/t/{team.slug}/runs/", {"suite": run.suite.pk, "entries": [a.pk], "splits": ["train"]}
    )
    assert refused.status_code == 302 and refused["Location"] == f"/t/{team.slug}/"
    assert Run.objects.count() == 2
    again = client.get(f"/t/{team.slug}/").content.decode()
    errors = again.split('id="start-run-errors"')[1].split("</ul>")[0]
    assert "splits: unknown splits [&#x27;train&#x27;]" in errors
    # What was sent stays chosen: no split is ticked by default when the user chose one.
    assert '<input type="checkbox" name="splits" value="test">' in again


def test_the_item_table_marks_right_and_wrong_and_filters_to_differences(owner, team, finished_run):
    run, items = finished_run
    page = csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/items/")
    assert page.status_code == 200
    assert page.content.count(b'class="num right"') == 3 and page.content.count(b'class="num wrong"') == 3
    differ = csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/items/?differ=1")
    assert len(differ.context["rows"]) == 2


def test_the_drill_down_shows_the_prompt_every_output_the_votes_and_the_reference(owner, team, finished_run):
    run, items = finished_run
    page = csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/items/{items[0].pk}/")
    assert page.status_code == 200
    body = page.content.decode()
    assert items[0].data["input"] in body and "Question:" in body
    assert f'<code id="reference">{items[0].data["reference"]}</code>' in body
    assert "-1.000" in body  # mean log-probability of a member's output
    assert "votes: {" in body and "&quot;41&quot;: 1" in body and "tied: true" in body  # how the vote went


def test_an_item_of_another_suite_is_404(owner, team, finished_run):
    run, _ = finished_run
    other = SuiteFactory(team=team, size=6).items.first()
    assert csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/items/{other.pk}/").status_code == 404


@pytest.mark.parametrize("suffix", ["items/", "items/1/"])
def test_an_outsider_gets_404_on_run_items(outsider, team, finished_run, suffix):
    run, _ = finished_run
    assert csrf_client(outsider).get(f"/t/{team.slug}/runs/{run.pk}/{suffix}").status_code == 404


def test_batches_held_by_a_stopped_worker_are_requeued_and_sent_again(team, clean_redis, settings):
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    from arena.evaluations.models import WorkItem
    from arena.evaluations.services import requeue_stale

    suite = SuiteFactory(team=team, size=4)
    entry = EntryFactory(team=team, name="a")
    run = RunFactory(suite=suite, state=State.RUNNING)
    long_ago = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
    stale = WorkItem.objects.create(
        run=run, entry=entry, batch_index=0, item_ids=[], state=State.RUNNING, claimed_at=long_ago
    )
    fresh = WorkItem.objects.create(
        run=run, entry=entry, batch_index=1, item_ids=[], state=State.RUNNING, claimed_at=timezone.now()
    )

    assert requeue_stale() == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (stale.state, fresh.state) == (State.QUEUED, State.RUNNING)
    assert clean_redis.llen("gpu") == 1
    assert PeriodicTask.objects.filter(task="arena.evaluations.tasks.requeue_stale", enabled=True).exists()


def _add_entries(team, run, n: int, start: int) -> None:
    for i in range(start, start + n):
        entry = EntryFactory(team=team, name=f"extra-{i}", config={"path": "/m/x.gguf"})
        RunEntryFactory(run=run, entry=entry, total_items=2, done_items=2, score=0.5, ci_low=0.2, ci_high=0.8, n=2)


def test_the_leaderboard_query_count_does_not_grow_with_entries(owner, team, finished_run):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    run, _ = finished_run
    client = csrf_client(owner)
    url = f"/t/{team.slug}/leaderboard/{run.suite.name}/"
    client.get(url)  # warm the session
    changed(team.pk)  # both requests below build the board (the new rows replace the version too)
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    _add_entries(team, run, 30, 0)
    with CaptureQueriesContext(connection) as many:
        response = client.get(url)
    assert len(response.context["board"]["rows"]) == 33
    assert len(many.captured_queries) == len(few.captured_queries)
