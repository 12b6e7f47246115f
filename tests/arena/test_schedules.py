"""Scheduled evaluations: schedules on the page and the API, one run per slot, and the team's queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from arena.alerts.queries import notifications_for
from arena.evaluations.models import EntryState, Run, RunEntry, State
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from arena.registry.services import put_model, register_blend, register_model
from arena.schedules import services
from arena.schedules.models import Firing, Outcome, Refresh, Schedule
from arena.teams.models import ApiToken, Role, Team
from tests.arena.helpers import NIGHT, done_result
from tests.factories import RunEntryFactory, RunFactory, SuiteFactory
from tests.helpers import csrf_client, post_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def suite(team):
    return SuiteFactory(team=team, size=12)


def endpoint(team, base_url: str, name: str, revision: str = "") -> Entry:
    """A model entry behind an OpenAI-compatible endpoint: its fingerprint needs no file, and registering
    it one answer from the loopback endpoint at ``base_url``."""
    config = {"base_url": base_url, "model": name, "revision": revision}
    return register_model(team, name=name, kind="openai", config=config)


@pytest.fixture
def base_url(serve) -> str:
    return f"{serve().url}/v1"


@pytest.fixture
def entries(team, base_url):
    a, b = endpoint(team, base_url, "a"), endpoint(team, base_url, "b")
    vote = register_blend(team, name="vote", strategy="majority_vote", params={}, members=["a", "b"])
    return a, b, vote


def beat_state() -> tuple[int, int, int]:
    return Schedule.objects.count(), PeriodicTask.objects.count(), CrontabSchedule.objects.count()


def schedule_for(team, names, *, cron="0 2 * * *", refresh=Refresh.ALL, tz="UTC", name="nightly") -> Schedule:
    return services.save_schedule(
        team, name=name, suite="arithmetic", entries=names, cron=cron, timezone_name=tz, refresh=refresh
    )


# --- Creating schedules -------------------------------------------------------------------


def test_a_member_schedules_nightly_evaluations_on_the_page_and_beat_holds_the_crontab(teammate, team, suite, entries):
    client = csrf_client(teammate)
    page = client.get(f"/t/{team.slug}/schedules/")
    assert page.status_code == 200 and b'value="0 2 * * *"' in page.content  # nightly unless told otherwise

    response = post_form(
        client,
        f"/t/{team.slug}/schedules/",
        {
            "name": "nightly",
            "suite": "arithmetic",
            "entries": ["a", "vote"],
            "cron": "0 2 * * *",
            "timezone": "Europe/Paris",
            "refresh": "changed",
            "enabled": "on",
        },
    )

    assert response.status_code == 302
    schedule = Schedule.objects.get(team=team)
    assert sorted(entry.name for entry in schedule.entries.all()) == ["a", "vote"]
    task = schedule.periodic_task
    assert task.task == "arena.schedules.tasks.fire_schedule" and task.enabled
    assert json.loads(task.kwargs) == {"schedule_id": schedule.pk}
    tab = task.crontab
    assert (tab.minute, tab.hour, tab.day_of_month, tab.month_of_year, tab.day_of_week) == ("0", "2", "*", "*", "*")
    assert str(tab.timezone) == "Europe/Paris"
    listing = client.get(response["Location"]).content.decode()
    assert "nightly" in listing and "Europe/Paris" in listing
    assert "CET" in listing or "CEST" in listing  # the next run, in the schedule's zone


def test_the_schedules_list_shows_each_schedule_s_splits(owner, team, suite, entries):
    services.save_schedule(
        team,
        name="with-dev",
        suite="arithmetic",
        entries=["a"],
        cron="0 2 * * *",
        timezone_name="UTC",
        splits=["dev", "test"],
    )
    schedule_for(team, ["b"], name="default")
    page = csrf_client(owner).get(f"/t/{team.slug}/schedules/").content.decode()
    assert "<th>Splits</th>" in page
    rows = {row.split("</a>")[0].rsplit(">", 1)[-1]: row for row in page.split("<tr>")[2:]}
    assert "<td>dev, test</td>" in rows["with-dev"]
    assert "test (default)" in rows["default"]


def test_the_api_creates_lists_changes_pauses_and_deletes_a_schedule(api, team, suite, entries):
    created = api(
        "post",
        "/schedules",
        {"name": "weekdays", "suite": "arithmetic", "entries": ["a", "b"], "cron": "*/15 3 * * 1-5"},
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["cron"], body["timezone"], body["refresh"], body["enabled"]) == (
        "*/15 3 * * 1-5",
        "UTC",
        "changed",
        True,
    )
    next_run = datetime.fromisoformat(body["next_run_at"])
    assert next_run.hour == 3 and next_run.minute % 15 == 0 and next_run.isoweekday() <= 5
    tab = Schedule.objects.get(pk=body["id"]).periodic_task.crontab
    assert (tab.minute, tab.hour, tab.day_of_week) == ("*/15", "3", "1-5")
    assert [schedule["name"] for schedule in api("get", "/schedules").json()] == ["weekdays"]

    changed = api(
        "put",
        f"/schedules/{body['id']}",
        {"name": "weekdays", "suite": "arithmetic", "entries": ["vote"], "cron": "30 4 * * *", "enabled": False},
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["entries"] == ["vote"] and changed.json()["next_run_at"] is None
    task = PeriodicTask.objects.get(pk=Schedule.objects.get(pk=body["id"]).periodic_task_id)
    assert not task.enabled and (task.crontab.minute, task.crontab.hour) == ("30", "4")

    assert api("delete", f"/schedules/{body['id']}").status_code == 204
    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.filter(task="arena.schedules.tasks.fire_schedule").exists()
    assert not CrontabSchedule.objects.filter(pk=task.crontab_id).exists()


@pytest.mark.parametrize(
    ("cron", "says"),
    [
        ("61 * * * *", "minute field '61'"),
        ("0 24 * * *", "hour field '24'"),
        ("0 2 * *", "five fields"),
        ("every night", "five fields"),
        ("0 2 * * * *", "five fields"),
        ("0 2 L * *", "day-of-month field 'L'"),
        ("0 2 * * 7", "Sunday is 0"),
        ("*/0 * * * *", "minute field '*/0'"),
        ("0 2 * * " + ",".join(["1", "2", "3"] * 12), "day-of-week field: at most 64 characters"),
    ],
)
def test_a_bad_cron_expression_is_a_422_naming_the_field_and_stores_nothing(api, team, suite, entries, cron, says):
    before = beat_state()
    response = api("post", "/schedules", {"name": "x", "suite": "arithmetic", "entries": ["a"], "cron": cron})
    assert response.status_code == 422
    assert says in response.json()["detail"]["cron"][0]
    assert beat_state() == before


def test_a_bad_cron_expression_on_the_page_is_shown_on_its_field_and_stores_nothing(owner, team, suite, entries):
    before = beat_state()
    response = post_form(
        csrf_client(owner),
        f"/t/{team.slug}/schedules/",
        {"name": "x", "suite": "arithmetic", "entries": ["a"], "cron": "0 25 * * *", "timezone": "UTC"},
    )
    assert response.status_code == 422
    assert "cron: hour field &#x27;25&#x27;" in response.content.decode()
    assert beat_state() == before


def test_every_bad_field_is_reported_at_once(api, team, suite, entries):
    before = beat_state()
    response = api(
        "post",
        "/schedules",
        {
            "name": "x",
            "suite": "arithmetics",
            "entries": ["a", "ghost"],
            "cron": "0 2 * * *",
            "timezone": "Mars/Olympus",
        },
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "unknown suite 'arithmetics'; the team has arithmetic" in detail["suite"][0]
    assert detail["entries"] == ["unknown entries: ghost"]
    assert "unknown time zone 'Mars/Olympus'" in detail["timezone"][0]
    assert beat_state() == before


@pytest.mark.parametrize("field", ["name", "suite", "cron", "timezone", "judge", "entries"])
def test_a_nul_character_in_any_field_is_a_422_on_that_field(api, team, suite, entries, field):
    body = {"name": "n", "suite": "arithmetic", "entries": ["a"]}
    body[field] = ["a\x00"] if field == "entries" else "a\x00b"
    response = api("post", "/schedules", body)
    assert response.status_code == 422
    assert response.json()["detail"][field] == ["must not contain NUL characters"]
    assert not Schedule.objects.exists()


def test_a_judge_is_refused_for_a_suite_scored_by_its_metric_and_names_must_be_unique(api, team, suite, entries):
    first = {"name": "n", "suite": "arithmetic", "entries": ["a"]}
    assert (
        api("post", "/schedules", {**first, "judge": "b"})
        .json()["detail"]["judge"][0]
        .startswith("only judge suites take a judge")
    )
    assert api("post", "/schedules", first).status_code == 201
    again = api("post", "/schedules", first)
    assert again.status_code == 422 and "already has a schedule named 'n'" in again.json()["detail"]["name"][0]


# --- Who may do what ----------------------------------------------------------------------


def test_a_viewer_sees_schedules_but_cannot_create_them(viewer, team, suite, entries, client):
    assert csrf_client(viewer).get(f"/t/{team.slug}/schedules/").status_code == 200
    before = beat_state()
    page = post_form(csrf_client(viewer), f"/t/{team.slug}/schedules/", {"name": "x", "suite": "arithmetic"})
    assert page.status_code == 403
    raw = ApiToken.issue(team, "read-only", role=Role.VIEWER)[1]
    response = client.post(
        "/api/v1/schedules",
        data=json.dumps({"name": "x", "suite": "arithmetic", "entries": ["a"]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 403
    assert beat_state() == before


@pytest.mark.parametrize("path", ["schedules/", "schedules/{id}/", "queue/"])
def test_an_outsider_gets_404_on_schedule_and_queue_pages(outsider, team, suite, entries, path):
    schedule = schedule_for(team, ["a"])
    url = f"/t/{team.slug}/" + path.format(id=schedule.pk)
    assert csrf_client(outsider).get(url).status_code == 404


def test_another_teams_token_gets_404_on_a_schedule(team, suite, entries, client):
    schedule = schedule_for(team, ["a"])
    blue = ApiToken.issue(Team.objects.get(slug="blue"), "blue")[1]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {blue}"}
    assert client.get(f"/api/v1/schedules/{schedule.pk}", **headers).status_code == 404
    assert client.delete(f"/api/v1/schedules/{schedule.pk}", **headers).status_code == 404
    assert client.get("/api/v1/schedules", **headers).json() == []
    assert Schedule.objects.filter(pk=schedule.pk).exists()


def test_a_member_deletes_a_schedule_on_its_page_and_beat_forgets_it(teammate, team, suite, entries):
    schedule = schedule_for(team, ["a"])
    task_id, tab_id = schedule.periodic_task_id, schedule.periodic_task.crontab_id
    response = post_form(csrf_client(teammate), f"/t/{team.slug}/schedules/{schedule.pk}/delete/", {})
    assert response.status_code == 302
    assert not PeriodicTask.objects.filter(pk=task_id).exists()
    assert not CrontabSchedule.objects.filter(pk=tab_id).exists()


def test_deleting_a_team_deletes_its_beat_tasks(team, base_url):
    blue = Team.objects.get(slug="blue")
    SuiteFactory(team=blue, size=12)
    endpoint(blue, base_url, "x")
    schedule = schedule_for(blue, ["x"])
    task_id = schedule.periodic_task_id
    blue.delete()
    assert not PeriodicTask.objects.filter(pk=task_id).exists()


def test_only_owners_set_the_webhook_and_it_must_be_http(owner, teammate, team, client):
    assert (
        post_form(
            csrf_client(teammate), f"/t/{team.slug}/schedules/webhook/", {"webhook_url": "https://x.example/h"}
        ).status_code
        == 403
    )
    member_token = ApiToken.issue(team, "m")[1]
    owner_token = ApiToken.issue(team, "o", role=Role.OWNER)[1]

    def put(raw, url):
        return client.put(
            "/api/v1/notifications",
            data=json.dumps({"webhook_url": url}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )

    assert put(member_token, "https://x.example/h").status_code == 403
    assert put(owner_token, "https://x.example/\x00").status_code == 422
    bad = put(owner_token, "ftp://x.example/h")
    assert bad.status_code == 422 and "not an http(s) URL" in bad.json()["detail"]["webhook_url"][0]
    assert notifications_for(team).webhook_url == ""
    assert put(owner_token, "https://hooks.example.org/arena").json() == {
        "webhook_url": "https://hooks.example.org/arena"
    }
    owner_page = post_form(csrf_client(owner), f"/t/{team.slug}/schedules/webhook/", {"webhook_url": "not a url"})
    assert owner_page.status_code == 302
    assert notifications_for(team).webhook_url == "https://hooks.example.org/arena"


# --- Firing -------------------------------------------------------------------------------


def test_firing_twice_for_the_same_night_makes_one_run(team, suite, entries):
    schedule = schedule_for(team, ["a", "vote"])

    first = services.fire(schedule.pk, now=NIGHT)
    assert services.fire(schedule.pk, now=NIGHT) is None
    assert services.fire(schedule.pk, now=NIGHT + timedelta(hours=3)) is None  # a late redelivery, same night

    assert first.outcome == Outcome.STARTED and first.slot == datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    run = Run.objects.get()
    assert first.run == run and run.suite == suite
    assert {run_entry.entry.name: run_entry.is_target for run_entry in RunEntry.objects.filter(run=run)} == {
        "a": True,
        "vote": True,
        "b": False,
    }
    following = services.fire(schedule.pk, now=NIGHT + timedelta(days=1))
    assert following.run_id != run.pk and Run.objects.count() == 2


def test_a_firing_a_few_seconds_early_belongs_to_its_slot_and_zones_follow_daylight_saving(team, suite, entries):
    paris = schedule_for(team, ["a"], tz="Europe/Paris")
    # 02:00 in Paris is 01:00 UTC in winter and 00:00 UTC in summer.
    assert services.slot_at(paris, datetime(2026, 1, 15, 0, 59, 58, tzinfo=UTC)) == datetime(
        2026, 1, 15, 1, 0, tzinfo=UTC
    )
    assert services.slot_at(paris, datetime(2026, 7, 15, 0, 0, 1, tzinfo=UTC)) == datetime(
        2026, 7, 15, 0, 0, tzinfo=UTC
    )
    assert services.next_fire(paris, datetime(2026, 7, 15, 0, 0, 1, tzinfo=UTC)) == datetime(
        2026, 7, 16, 0, 0, tzinfo=UTC
    )


def test_the_latest_suite_version_at_firing_time_is_evaluated(team, suite, entries):
    schedule = schedule_for(team, ["a"])
    newer = SuiteFactory(team=team, size=14)
    assert newer.pk != suite.pk
    assert services.fire(schedule.pk, now=NIGHT).run.suite == newer


def test_only_entries_whose_models_changed_are_evaluated_again(team, suite, entries):
    a, b, vote = entries
    schedule = schedule_for(team, ["a", "b", "vote"], refresh=Refresh.CHANGED)
    earlier = RunFactory(suite=suite)
    for entry in (a, b):
        done_result(earlier, entry, backend_for(entry).fingerprint())
    done_result(earlier, vote, "")

    skipped = services.fire(schedule.pk, now=NIGHT)
    assert skipped.outcome == Outcome.SKIPPED and skipped.run is None
    assert skipped.note == f"nothing changed since the last results on arithmetic v{suite.version}"

    put_model(team, name="a", kind="openai", config={"base_url": a.config["base_url"], "model": "a", "revision": "2"})
    started = services.fire(schedule.pk, now=NIGHT + timedelta(days=1))

    assert started.outcome == Outcome.STARTED
    targets = {run_entry.entry.name for run_entry in RunEntry.objects.filter(run=started.run, is_target=True)}
    assert targets == {"a", "vote"}  # the blend's member a changed; b did not
    assert started.note == f"unchanged since their last result on v{suite.version}, left out: b"
    assert Run.objects.count() == 2


def test_a_schedule_whose_suite_is_gone_records_why_nothing_ran(team, suite, entries):
    schedule = schedule_for(team, ["a"])
    Schedule.objects.filter(pk=schedule.pk).update(suite_name="deleted-suite")
    failed = services.fire(schedule.pk, now=NIGHT)
    assert failed.outcome == Outcome.FAILED and "no suite named 'deleted-suite'" in failed.note
    assert not Run.objects.exists()


def test_a_paused_or_vanished_schedule_starts_nothing(team, suite, entries):
    schedule = services.save_schedule(team, name="p", suite="arithmetic", entries=["a"], enabled=False)
    assert services.fire(schedule.pk, now=NIGHT) is None
    assert services.fire(10**9, now=NIGHT) is None
    assert not Firing.objects.exists() and not Run.objects.exists()


# --- The queue ----------------------------------------------------------------------------


def test_the_queue_shows_waiting_running_done_and_failed_runs_with_reasons_and_what_comes_next(
    viewer, team, suite, entries, api
):
    a, b, vote = entries
    schedule = schedule_for(team, ["a"], cron="30 5 * * *")
    services.fire(schedule.pk, now=NIGHT + timedelta(hours=4))  # a waiting run, started by the schedule
    running = RunFactory(suite=suite, state=State.RUNNING)
    RunEntryFactory(run=running, entry=a, state=EntryState.RUNNING, total_items=6, done_items=2)
    from arena.evaluations.models import WorkItem

    WorkItem.objects.create(
        run=running, entry=a, batch_index=0, item_ids=[], state=State.QUEUED, attempts=1, error="endpoint timed out"
    )
    failed = RunFactory(suite=suite, state=State.FAILED, error="b: gone")
    RunEntryFactory(run=failed, entry=b, state=EntryState.FAILED, error="model file missing")
    done = RunFactory(suite=suite)
    skipper = schedule_for(team, ["a"], name="skipper", refresh=Refresh.CHANGED)
    earlier = RunFactory(suite=suite)
    done_result(earlier, a, backend_for(a).fingerprint())
    services.fire(skipper.pk, now=NIGHT)

    page = csrf_client(viewer).get(f"/t/{team.slug}/queue/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "1 run waiting" in html and "1 run running" in html and "1 run failed" in html and "2 runs done" in html
    assert "b: model file missing" in html
    assert "a batch 0 waits to retry (attempt 1): endpoint timed out" in html
    assert "schedule nightly" in html
    assert "nothing changed since the last results" in html
    assert "05:30 UTC" in html  # the next firing of "nightly"

    only_failed = csrf_client(viewer).get(f"/t/{team.slug}/queue/?state=failed").content.decode()
    assert f'data-run="{failed.pk}"' in only_failed and f'data-run="{done.pk}"' not in only_failed

    body = api("get", "/queue").json()
    assert body["counts"] == {"waiting": 1, "running": 1, "done": 2, "partial": 0, "failed": 1}
    assert [r["id"] for r in body["runs"]] == sorted((r["id"] for r in body["runs"]), reverse=True)
    by_id = {r["id"]: r for r in body["runs"]}
    assert by_id[failed.pk]["reasons"] == ["b: model file missing"]
    assert by_id[running.pk]["done_items"] == 2 and by_id[running.pk]["total_items"] == 6
    assert sorted(u["schedule"] for u in body["upcoming"]) == ["nightly", "skipper"]
    assert body["upcoming"][0]["next_run_at"] <= body["upcoming"][1]["next_run_at"]
    assert body["not_started"][0]["outcome"] == Outcome.SKIPPED
    assert api("get", "/queue?state=lost").status_code == 422
