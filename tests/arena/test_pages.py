"""The run's item table and the item drill-down, on stored results."""

from __future__ import annotations

import math
import zlib
from html import escape

import numpy as np
import pytest

from arena.evaluations.events import changed
from arena.evaluations.models import Generation, Run, Score, State
from arena.registry.models import Entry
from ensembles.strategies import STRATEGIES, MemberAnswer
from ensembles.strategies.vote import MajorityVote
from tests.factories import BlendFactory, EntryFactory, RunEntryFactory, RunFactory, SuiteFactory
from tests.helpers import csrf_client, post_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_run(team):
    suite = SuiteFactory(team=team, size=4)
    a = EntryFactory(team=team, name="a")
    b = EntryFactory(team=team, name="b")
    vote = BlendFactory(team=team, name="vote", members=[b, a])
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
            # The vote's own account of the tie: its first member, b, wins it.
            details=MajorityVote()
            .combine([MemberAnswer(member="b", answer=item.data["reference"]), MemberAnswer(member="a", answer="41")])
            .details,
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
    # How the vote went, as a tally: each answer, how it was counted, its votes and who gave it.
    reference = items[0].data["reference"]
    how = body.split('id="how-')[1]
    assert f"Majority vote: “{reference}” won with 1 of 2 votes (b)." in how
    assert "The top answers tied between" in how
    assert (
        f'<tr class="chosen" title="what the blend chose"><td>{reference}</td><td>{reference.lower()}</td><td>1</td><td>b</td></tr>'
        in how
    )
    assert "<tr><td>41</td><td>41</td><td>1</td><td>a</td></tr>" in how
    assert "supporters" not in how and "{" not in how  # no raw details


def trigram_embedder(texts: list[str]) -> np.ndarray:
    """A stand-in encoder for the router: character trigrams hashed into 64 buckets."""
    out = np.zeros((len(texts), 64))
    for row, text in enumerate(texts):
        padded = f"  {text.lower()} "
        for i in range(len(padded) - 2):
            out[row, zlib.crc32(padded[i : i + 3].encode()) % 64] += 1.0
    return out


# Each learned strategy, the phrase its drill-down shows (the router is asked about an item like those b gets right).
DECIDERS = {
    "majority_vote": ({}, "Tally: votes per answer"),
    "weighted_vote": ({}, "Tally: weight per answer"),
    "boosting": ({}, "Boosting rounds fitted on dev"),
    "stacking": ({}, "Stacking: the meta-model (a logistic regression fitted on dev)"),
    "cascade": ({"threshold": 0.5}, "it stopped at b (confidence 0.900) after asking 2 members."),
    "mi_selection": ({}, "Members picked on dev"),
    "bagging": ({"n_estimators": 3}, "Bagging: 3 stacking blends"),
    "router": ({}, "The router chose b"),
    "pair_ranker": ({"aggregation": "bubble"}, "Duels, in order"),
}


@pytest.mark.parametrize("strategy", DECIDERS)
def test_the_drill_down_says_in_words_how_each_kind_of_blend_decided(owner, team, finished_run, strategy):
    run, items = finished_run
    item, reference = items[0], items[0].data["reference"]
    params, phrase = DECIDERS[strategy]
    cls = STRATEGIES.get(strategy)
    decider = cls(params, embedder=trigram_embedder) if strategy in ("router", "pair_ranker") else cls(params)
    # Dev: b is right on the capital questions and sure of it, a on the sums, unsure.
    dev = [
        ([("a", "Paris", 0.3), ("b", "Rome", 0.9)], "Rome", "capital of Italy"),
        ([("a", "Bern", 0.3), ("b", "Oslo", 0.9)], "Oslo", "capital of Norway"),
        ([("a", "4", 0.4), ("b", "5", 0.8)], "4", "what is 2 + 2"),
        ([("a", "9", 0.4), ("b", "Lima", 0.9)], "Lima", "capital of Peru"),
        ([("a", "x", 0.2), ("b", "Kyiv", 0.9)], "Kyiv", "capital of Ukraine"),
    ]
    if decider.needs_fit:
        decider.fit(
            [
                [MemberAnswer(member=m, answer=ans, logprob=math.log(p)) for m, ans, p in answers]
                for answers, _, _ in dev
            ],
            [ref for _, ref, _ in dev],
            dev_inputs=[text for *_, text in dev],
        )
    answers = [
        MemberAnswer(member="a", answer="41", logprob=math.log(0.3)),
        MemberAnswer(member="b", answer=reference, logprob=math.log(0.9)),
    ]
    decision = decider.combine(answers, item_input="capital of Spain")
    blend = BlendFactory(
        team=team,
        name=f"{strategy}-blend",
        strategy=strategy,
        params=params,
        members=[Entry.objects.get(team=team, name="a"), Entry.objects.get(team=team, name="b")],
    )
    Score.objects.create(
        run=run,
        entry=blend,
        item=item,
        prediction=decision.answer,
        value=float(decision.answer == reference),
        details=decision.details,
    )
    body = csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/items/{item.pk}/").content.decode()
    how = body.split(f'id="how-{blend.pk}"')[1].split("</section>")[0]
    assert f"How {strategy}-blend decided" in how and cls.pretty_name in escape(how, quote=False)
    assert escape(phrase, quote=False) in how
    assert "<caption>Details</caption>" not in how  # a known shape never falls back to the key/value table


def test_a_decision_of_an_unknown_shape_reads_as_a_key_value_table_without_ids(owner, team, finished_run):
    run, items = finished_run
    blend = BlendFactory(team=team, name="mystery", strategy="majority_vote", members=[])
    details = {
        "hunch_strength": {"a": 0.25, "b": 0.75},
        "asked": ["a", "b"],
        "sure": False,
        "consumed": {"generations": {"918273": [3, 0.1], "918274": [4, 0.2]}, "own_calls": {}},
    }
    Score.objects.create(run=run, entry=blend, item=items[0], prediction="x", value=0.0, details=details)
    body = csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/items/{items[0].pk}/").content.decode()
    how = body.split(f'id="how-{blend.pk}"')[1].split("</section>")[0]
    assert "<caption>Details</caption>" in how
    assert "<tr><td>hunch strength</td><td>a: 0.250; b: 0.750</td></tr>" in how
    assert "<tr><td>asked</td><td>a, b</td></tr>" in how and "<tr><td>sure</td><td>no</td></tr>" in how
    assert "It read 2 stored answers." in how and "918273" not in body


def test_the_run_page_and_the_queue_count_with_units(owner, team, finished_run):
    run, _ = finished_run
    client = csrf_client(owner)
    assert "2 of 2 items" in client.get(f"/t/{team.slug}/runs/{run.pk}/").content.decode()
    queued = RunFactory(suite=run.suite, state=State.QUEUED)
    RunEntryFactory(
        run=queued, entry=Entry.objects.get(team=team, name="a"), state="queued", total_items=50, done_items=40
    )
    queue = client.get(f"/t/{team.slug}/queue/").content.decode()
    assert "1 run waiting" in queue and "1 run done" in queue and "0 runs failed" in queue
    assert "40 of 50 items" in queue


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
