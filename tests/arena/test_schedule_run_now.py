"""Running a schedule now (page and API), and the splits a schedule evaluates."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django_celery_beat.models import PeriodicTask

from arena.evaluations.models import Run, State
from arena.registry.backends import backend_for
from arena.registry.services import register_blend, register_model
from arena.schedules import services
from arena.schedules.models import Firing, Outcome, Refresh, Schedule
from arena.teams.models import ApiToken, Role
from tests.arena.helpers import NIGHT, done_result
from tests.factories import RunFactory, SuiteFactory
from tests.helpers import csrf_client, post_form, wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def suite(team):
    return SuiteFactory(team=team, size=12)  # 6 dev + 6 test items


@pytest.fixture
def entries(team, serve):
    config = {"base_url": f"{serve().url}/v1"}
    a = register_model(team, name="a", kind="openai", config={**config, "model": "a"})
    b = register_model(team, name="b", kind="openai", config={**config, "model": "b"})
    vote = register_blend(team, name="vote", strategy="majority_vote", params={}, members=["a", "b"])
    return a, b, vote


@pytest.fixture
def schedule(team, suite, entries):
    return services.save_schedule(team, name="nightly", suite="arithmetic", entries=["a", "vote"], refresh="all")


# --- Run now ------------------------------------------------------------------------------


def test_run_now_through_the_api_queues_a_firing_that_a_worker_turns_into_a_run(api, schedule, owner):
    response = api("post", f"/schedules/{schedule.pk}/run")

    assert response.status_code == 202
    body = response.json()
    assert (body["outcome"], body["manual"], body["run"]) == (Outcome.PENDING, True, None)
    # What the worker's task does with it: the rules of a cron firing.
    firing = services.start_firing(body["id"])
    assert firing.outcome == Outcome.STARTED and firing.run.suite.name == "arithmetic"
    assert {run_entry.entry.name for run_entry in firing.run.run_entries.filter(is_target=True)} == {"a", "vote"}
    assert services.start_firing(body["id"]) is None  # delivered twice: one run
    assert Run.objects.count() == 1
    listed = api("get", f"/schedules/{schedule.pk}").json()["recent_firings"]
    assert [(f["id"], f["manual"], f["run"]) for f in listed] == [(firing.pk, True, firing.run_id)]


def test_a_second_run_now_while_the_first_run_is_unfinished_is_a_409_naming_it(api, schedule):
    first = api("post", f"/schedules/{schedule.pk}/run").json()
    waiting = api("post", f"/schedules/{schedule.pk}/run")
    assert waiting.status_code == 409
    assert waiting.json()["firing"]["id"] == first["id"] and "waits for a worker" in waiting.json()["detail"]

    run = services.start_firing(first["id"]).run
    running = api("post", f"/schedules/{schedule.pk}/run")
    assert running.status_code == 409 and f"run #{run.pk} is still queued" in running.json()["detail"]
    assert Firing.objects.count() == 1

    Run.objects.filter(pk=run.pk).update(state=State.DONE)
    assert api("post", f"/schedules/{schedule.pk}/run").status_code == 202
    assert Firing.objects.filter(manual=True).count() == 2


def test_a_nightly_run_still_going_makes_run_now_a_409_too(api, schedule):
    nightly = services.fire(schedule.pk, now=NIGHT)
    response = api("post", f"/schedules/{schedule.pk}/run")
    assert response.status_code == 409 and response.json()["firing"]["run"] == nightly.run_id


def test_run_now_by_the_refresh_rule_starts_nothing_when_nothing_changed_and_says_why(team, suite, entries):
    a, b, vote = entries
    schedule = services.save_schedule(team, name="n", suite="arithmetic", entries=["a"], refresh=Refresh.CHANGED)
    earlier = RunFactory(suite=suite)
    done_result(earlier, a, backend_for(a).fingerprint())

    firing = services.start_firing(services.run_now(schedule).pk)
    assert firing.outcome == Outcome.SKIPPED and firing.run is None
    assert firing.note == f"nothing changed since the last results on arithmetic v{suite.version}"
    assert services.busy_firing(schedule) is None  # nothing is going: it can be run again


def test_a_paused_schedule_can_still_be_run_by_hand_and_viewers_cannot(api, team, suite, entries):
    paused = services.save_schedule(team, name="p", suite="arithmetic", entries=["a"], enabled=False)
    _, viewer_token = ApiToken.issue(team, "read", role=Role.VIEWER)
    assert api("post", f"/schedules/{paused.pk}/run", auth=viewer_token).status_code == 403
    assert api("post", f"/schedules/{paused.pk}/run").status_code == 202
    assert api("post", "/schedules/999999/run").status_code == 404


def test_run_now_on_the_page_shows_the_button_to_members_and_a_409_with_the_reason(teammate, viewer, team, schedule):
    url = f"/t/{team.slug}/schedules/{schedule.pk}/"
    assert b'id="run-now"' not in csrf_client(viewer).get(url).content
    client = csrf_client(teammate)
    assert b'id="run-now"' in client.get(url).content

    fired = post_form(client, url + "run/", {})
    assert fired.status_code == 302 and fired["Location"] == url
    page = client.get(url).content.decode()
    assert "fires now" in page and "by hand" in page and "Waiting for a worker" in page
    firing = Firing.objects.get(schedule=schedule)
    assert firing.manual and firing.requested_by == teammate

    again = post_form(client, url + "run/", {})
    assert again.status_code == 409
    assert 'id="run-now-busy"' in again.content.decode() and "waits for a worker" in again.content.decode()
    assert Firing.objects.count() == 1


def test_manual_firings_never_take_a_cron_slot(team, schedule):
    manual = services.run_now(schedule)
    Firing.objects.filter(pk=manual.pk).update(slot=NIGHT.replace(second=0), outcome=Outcome.SKIPPED)
    # The night's own firing still happens, though a manual one sits on the very same instant.
    assert services.fire(schedule.pk, now=NIGHT).outcome == Outcome.STARTED


@pytest.mark.django_db(transaction=True)
def test_two_clicks_at_once_make_one_firing(team, suite, entries):
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite serializes every write transaction anyway)")
    schedule = services.save_schedule(team, name="n", suite="arithmetic", entries=["a"])
    results, start = [], threading.Barrier(2)

    def click():
        start.wait()
        try:
            results.append(services.run_now(schedule).pk)
        except services.ScheduleBusy as exc:
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Firing.objects.count() == 1
    assert sorted(type(r).__name__ for r in results) == ["ScheduleBusy", "int"]


def test_a_firing_whose_message_was_lost_is_sent_again_by_the_sweep(clean_redis, schedule):
    firing = services.run_now(schedule)  # the test's transaction never commits: its task never leaves
    assert services.start_overdue_firings(grace_s=60) == 0  # not overdue yet
    assert services.start_overdue_firings(grace_s=0) == 1
    assert clean_redis.llen("cpu") == 1
    assert Firing.objects.get(pk=firing.pk).outcome == Outcome.PENDING
    assert PeriodicTask.objects.filter(task="arena.schedules.tasks.start_overdue_firings", enabled=True).exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_run_now_through_a_real_worker_starts_the_run(worker, team, suite, entries, api):
    schedule = services.save_schedule(
        team, name="n", suite="arithmetic", entries=["a"], refresh="all", splits=["dev", "test"]
    )
    response = api("post", f"/schedules/{schedule.pk}/run")
    assert response.status_code == 202
    firing = wait_for(
        lambda: Firing.objects.filter(pk=response.json()["id"], run__isnull=False).select_related("run").first(),
        timeout=60,
        what="the worker to start the run",
    )
    assert firing.outcome == Outcome.STARTED and firing.run.splits == ["dev", "test"]


# --- Splits -------------------------------------------------------------------------------


def test_a_schedule_chooses_its_splits_and_its_runs_evaluate_them(api, team, suite, entries):
    created = api(
        "post",
        "/schedules",
        {"name": "both", "suite": "arithmetic", "entries": ["a"], "splits": ["test", "dev", "test"], "refresh": "all"},
    )
    assert created.status_code == 201 and created.json()["splits"] == ["test", "dev"]
    schedule = Schedule.objects.get(name="both")
    run = services.fire(schedule.pk, now=NIGHT).run
    assert run.splits == ["test", "dev"] and run.run_entries.get().total_items == 12

    default = services.save_schedule(team, name="default", suite="arithmetic", entries=["a"])
    assert default.splits == [] and services.fire(default.pk, now=NIGHT).run.splits == ["test"]


@pytest.mark.parametrize(
    "splits, says",
    [
        (["train"], "has no split 'train'; it has dev, test"),
        (["dev", "validation"], "has no split 'validation'"),
        (["dev\x00"], "must not contain NUL characters"),
    ],
)
def test_a_split_the_suite_does_not_have_is_a_422_naming_the_field_and_stores_nothing(
    api, team, suite, entries, splits, says
):
    response = api("post", "/schedules", {"name": "x", "suite": "arithmetic", "entries": ["a"], "splits": splits})
    assert response.status_code == 422
    assert says in response.json()["detail"]["splits"][0]
    assert not Schedule.objects.exists()


def test_a_split_without_items_is_refused(api, team, entries):
    manifest = (
        "name: tiny\nversion: '1'\ntask_type: generation\nprompt_template: 'Q: {input}'\n"
        "answer_extraction: first_line\nmetric: exact_match\nsplits: [dev, test]\n"
    )
    items = '{"id": "1", "input": "1+1", "reference": "2", "split": "test"}\n'
    assert (
        api("post", "/suites", {"format": "suite", "files": {"manifest": manifest, "items": items}}).status_code == 201
    )
    response = api("post", "/schedules", {"name": "x", "suite": "tiny", "entries": ["a"], "splits": ["dev"]})
    assert response.status_code == 422 and "has no items in dev" in response.json()["detail"]["splits"][0]


def test_splits_on_the_page_are_checkboxes_and_a_bad_one_is_shown_on_its_field(teammate, team, suite, entries):
    client = csrf_client(teammate)
    page = client.get(f"/t/{team.slug}/schedules/").content.decode()
    assert 'name="splits" value="dev"' in page and 'name="splits" value="test"' in page
    form = {"name": "n", "suite": "arithmetic", "entries": ["a"], "cron": "0 2 * * *", "timezone": "UTC"}

    bad = post_form(client, f"/t/{team.slug}/schedules/", {**form, "splits": ["train"]})
    assert bad.status_code == 422 and "splits: Select a valid choice" in bad.content.decode()
    assert post_form(client, f"/t/{team.slug}/schedules/", {**form, "splits": ["dev"]}).status_code == 302
    schedule = Schedule.objects.get()
    assert schedule.splits == ["dev"]
    assert 'value="dev" checked' in client.get(f"/t/{team.slug}/schedules/{schedule.pk}/").content.decode()


def test_an_entry_whose_last_result_did_not_cover_the_schedules_splits_is_evaluated_again(team, suite, entries):
    a, b, vote = entries
    schedule = services.save_schedule(
        team, name="n", suite="arithmetic", entries=["a"], refresh=Refresh.CHANGED, splits=["dev", "test"]
    )
    earlier = RunFactory(suite=suite)
    done_result(earlier, a, backend_for(a).fingerprint())
    assert services.fire(schedule.pk, now=NIGHT).outcome == Outcome.STARTED
    covered = RunFactory(suite=suite, splits=["dev", "test"])
    done_result(covered, a, backend_for(a).fingerprint())
    assert services.fire(schedule.pk, now=NIGHT.replace(day=11)).outcome == Outcome.SKIPPED


def test_a_firing_on_a_suite_version_that_lost_the_split_records_why(team, suite, entries):
    schedule = services.save_schedule(team, name="n", suite="arithmetic", entries=["a"], splits=["dev"])
    Schedule.objects.filter(pk=schedule.pk).update(splits=["validation"])
    failed = services.fire(schedule.pk, now=NIGHT)
    assert failed.outcome == Outcome.FAILED and "unknown splits ['validation']" in failed.note
