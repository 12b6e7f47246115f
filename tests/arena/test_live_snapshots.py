"""Live snapshots built once per change and shared by every reader (arena/core/cache.py,
arena/leaderboard/snapshots.py, arena/evaluations/snapshots.py), and open pages that lose their
membership (arena/leaderboard/consumers.py).

Against the real Redis the tests are given (REDIS_URL); the load itself is bench/load.py's.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from arena.core import cache
from arena.evaluations import events
from arena.evaluations import snapshots as run_snapshots
from arena.evaluations.models import Run, RunEntry, State
from arena.leaderboard import snapshots
from arena.registry.models import Entry
from arena.teams.models import Membership, Role
from tests.factories import BlendFactory, EntryFactory, RunEntryFactory, RunFactory, SuiteFactory, TeamFactory
from tests.helpers import csrf_client

pytestmark = pytest.mark.django_db


def make_run(team) -> Run:
    """A run of two entries on arithmetic, scored 0.5 and 0.25 (the run itself still going)."""
    suite = SuiteFactory(team=team, size=8)
    run = RunFactory(suite=suite, state=State.RUNNING)
    for name, score in (("a", 0.5), ("b", 0.25)):
        entry = EntryFactory(team=team, name=name)
        RunEntryFactory(run=run, entry=entry, total_items=4, done_items=4, score=score, ci_low=0.0, ci_high=1.0, n=4)
    return run


@pytest.fixture
def run(team):
    return make_run(team)


def scores(board: dict) -> dict[str, float]:
    return {r["entry"]: r["score"] for r in board["rows"]}


def test_a_board_is_built_once_per_change_and_read_without_queries_until_the_next(team, run):
    assert scores(snapshots.board(team, "arithmetic")) == {"a": 0.5, "b": 0.25}
    with CaptureQueriesContext(connection) as again:
        assert scores(snapshots.board(team, "arithmetic")) == {"a": 0.5, "b": 0.25}
    assert again.captured_queries == []

    run_entry = RunEntry.objects.get(run=run, entry__name="b")
    run_entry.score = 0.75
    run_entry.save()
    assert scores(snapshots.board(team, "arithmetic")) == {"a": 0.5, "b": 0.75}


def test_a_live_event_makes_the_next_reload_show_what_the_worker_stored(team, run):
    snapshots.board(team, "arithmetic")
    # What the worker does: a conditional update (no model signal), then the event.
    RunEntry.objects.filter(run=run, entry__name="a").update(score=1.0)
    events.publish(run, "result")
    assert scores(snapshots.board(team, "arithmetic")) == {"a": 1.0, "b": 0.25}


def test_the_page_the_json_and_the_api_show_the_same_board(owner, team, run, api):
    page = csrf_client(owner).get(f"/t/{team.slug}/leaderboard/arithmetic/?format=json").json()
    assert scores(page) == scores(api("get", "/leaderboard/arithmetic").json()) == {"a": 0.5, "b": 0.25}


def test_a_board_pages_socket_carries_the_pages_filters(owner, team, run):
    page = csrf_client(owner).get(f"/t/{team.slug}/leaderboard/arithmetic/?kind=blend&sort=entry").content.decode()
    assert f'data-ws="/ws/t/{team.slug}/leaderboard/arithmetic/?kind=blend&amp;sort=entry"' in page


def test_each_version_filter_is_a_board_of_its_own(team, run):
    newer = SuiteFactory(team=team, size=10)
    later = RunFactory(suite=newer)
    RunEntryFactory(run=later, entry=Entry.objects.get(team=team, name="a"), score=0.9, n=5)
    assert scores(snapshots.board(team, "arithmetic")) == {"a": 0.9, "b": 0.25}
    assert scores(snapshots.board(team, "arithmetic", version=run.suite.version)) == {"a": 0.5, "b": 0.25}
    assert scores(snapshots.board(team, "arithmetic", version=newer.version)) == {"a": 0.9}


def test_a_run_snapshot_shows_the_runs_own_row_as_read_even_when_no_event_followed(team, run):
    assert run_snapshots.run_snapshot(run)["state"] == State.RUNNING
    # The judge's state and provenance change without an event: the row the caller reads is the truth.
    Run.objects.filter(pk=run.pk).update(state=State.DONE, provenance={"git_revision": "abc"})
    fresh = Run.objects.select_related("suite", "team").get(pk=run.pk)
    snapshot = run_snapshots.run_snapshot(fresh)
    assert (snapshot["state"], snapshot["provenance"]) == (State.DONE, {"git_revision": "abc"})
    assert {entry["entry"]: entry["score"] for entry in snapshot["entries"]} == {"a": 0.5, "b": 0.25}


def test_with_the_cache_unreachable_every_reader_builds_from_the_database(team, run, settings):
    snapshots.board(team, "arithmetic")
    with socket.socket() as listener:  # a port nobody listens on
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"serializer": "arena.core.cache.JSONSerializer", "socket_connect_timeout": 1},
        }
    }
    RunEntry.objects.filter(run=run, entry__name="a").update(score=0.0)
    events.publish(run, "result")  # the version cannot be replaced: logged, never raised
    assert scores(snapshots.board(team, "arithmetic")) == {"a": 0.0, "b": 0.25}


def test_a_team_that_gets_an_old_id_back_never_sees_the_old_teams_board(team):
    class RolledBack(Exception):
        pass

    # SQLite hands an id out again after a rollback; a restored database can too.
    with pytest.raises(RolledBack), transaction.atomic():
        gone = TeamFactory(name="Gone", slug="gone")
        make_run(gone)
        assert scores(snapshots.board(gone, "arithmetic")) == {"a": 0.5, "b": 0.25}
        raise RolledBack
    again = TeamFactory(pk=gone.pk, name="Again", slug="again")
    assert snapshots.board(again, "arithmetic")["rows"] == []


def test_readers_arriving_together_after_a_change_wait_for_one_build():
    version_key = f"test-version:{time.monotonic_ns()}"
    cache.bump(version_key)
    builds, results = [], []

    def build():
        builds.append(1)
        time.sleep(0.3)  # long enough for every reader to arrive while it runs
        return {"rows": [1, 2, 3]}

    def reader():
        results.append(cache.cached("test-board", version_key, build))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and results == [{"rows": [1, 2, 3]}] * 8


def test_a_build_that_fails_leaves_the_next_reader_free_to_build():
    version_key = f"test-version:{time.monotonic_ns()}"

    def broken():
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        cache.cached("test-board", version_key, broken)
    started = time.monotonic()
    assert cache.cached("test-board", version_key, lambda: {"rows": []}) == {"rows": []}
    assert time.monotonic() - started < cache.BUILD_WAIT_S  # nobody waited for the failed build


# --- Open pages and membership -------------------------------------------------------------


def listen(user, path: str, between) -> list:
    """Open ``path`` as ``user``; send an event, run ``between()``, send another: what the page got."""
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator

    from arena.asgi import application

    team_id = user.memberships.get().team_id
    session = Client()
    session.force_login(user)
    headers = [
        (b"origin", b"http://testserver"),
        (b"host", b"testserver"),
        (b"cookie", f"sessionid={session.cookies['sessionid'].value}".encode()),
    ]

    async def watch():
        communicator = WebsocketCommunicator(application, path, headers=headers)
        assert (await communicator.connect(timeout=10))[0]
        layer = get_channel_layer()
        got = []
        for step in ("first", "second"):
            message = {"type": "arena.event", "event": step, "run": 0}
            await layer.group_send(events.board_group(team_id, "arithmetic"), message)
            got.append(await communicator.receive_output(timeout=10))
            if step == "first":
                await sync_to_async(between)()
        await communicator.disconnect()
        return got

    return asyncio.run(watch())


@pytest.mark.django_db(transaction=True)
def test_a_role_change_keeps_the_page_open_and_the_next_event_arrives(clean_redis, team, viewer):
    membership = Membership.objects.get(team=team, user=viewer)

    def promote():
        membership.role = Role.MEMBER
        membership.save()

    first, second = listen(viewer, f"/ws/t/{team.slug}/leaderboard/arithmetic/", promote)
    assert first["type"] == second["type"] == "websocket.send"
    assert '"second"' in second["text"]


@pytest.mark.django_db(transaction=True)
def test_a_deactivated_account_hears_nothing_more(clean_redis, team, viewer):
    def deactivate():
        viewer.is_active = False
        viewer.save()

    first, second = listen(viewer, f"/ws/t/{team.slug}/leaderboard/arithmetic/", deactivate)
    assert first["type"] == "websocket.send"
    assert second == {"type": "websocket.close", "code": 4404}


# --- Events that carry what the page shows --------------------------------------------------


def watch_events(user, paths: list[str], publish) -> list[dict]:
    """Open ``paths`` as ``user``, run ``publish()`` once, and return the message each page got."""
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from arena.asgi import application

    session = Client()
    session.force_login(user)
    headers = [
        (b"origin", b"http://testserver"),
        (b"host", b"testserver"),
        (b"cookie", f"sessionid={session.cookies['sessionid'].value}".encode()),
    ]

    async def watch():
        pages = [WebsocketCommunicator(application, path, headers=headers) for path in paths]
        for page in pages:
            assert (await page.connect(timeout=10))[0]
        await sync_to_async(publish)()
        got = [await page.receive_json_from(timeout=10) for page in pages]
        for page in pages:
            await page.disconnect()
        return got

    return asyncio.run(watch())


@pytest.mark.django_db(transaction=True)
def test_an_event_brings_every_open_board_page_what_it_would_reload(clean_redis, team, owner, monkeypatch):
    run = make_run(team)
    blend = BlendFactory(team=team, name="vote")
    RunEntryFactory(run=run, entry=blend, total_items=4, done_items=4, score=0.75, ci_low=0.5, ci_high=1.0, n=4)
    builds = []
    board_push = snapshots.board_push
    monkeypatch.setattr(snapshots, "board_push", lambda *a: builds.append(a) or board_push(*a))
    page = f"/ws/t/{team.slug}/leaderboard/arithmetic/"

    default, same, blends = watch_events(
        owner, [page, page, page + "?kind=blend&sort=entry"], lambda: events.publish(run, "result", entry=blend.pk)
    )

    client = csrf_client(owner)
    board_url = f"/t/{team.slug}/leaderboard/arithmetic/"
    assert default == same
    assert (default["event"], default["run"], default["entry"]) == ("result", run.pk, blend.pk)
    assert default["snapshot"] == client.get(board_url + "?format=json").json()
    assert default["chart"] == client.get(board_url + "?format=chart").json()
    assert blends["snapshot"] == client.get(board_url + "?kind=blend&sort=entry&format=json").json()
    assert [r["entry"] for r in blends["snapshot"]["rows"]] == ["vote"]
    assert len(builds) == 2  # once for the two default pages, once for the filtered one
    assert "version" not in default
    # The rows come rendered as the page renders them, and a page that reconnects fetches the same.
    assert f"<tbody>{default['rows']}</tbody>" in client.get(board_url).content.decode()
    live = client.get(board_url + "?format=live").json()
    assert live == {k: default[k] for k in ("snapshot", "rows", "chart")}


@pytest.mark.django_db(transaction=True)
def test_an_event_brings_the_run_page_its_snapshot(clean_redis, team, owner):
    run = make_run(team)

    def finish():
        Run.objects.filter(pk=run.pk).update(state=State.DONE)
        events.publish(run, "finished", state=State.DONE)

    [message] = watch_events(owner, [f"/ws/t/{team.slug}/runs/{run.pk}/"], finish)
    snapshot = message["snapshot"]
    assert (message["event"], snapshot["id"], snapshot["state"]) == ("finished", run.pk, State.DONE)
    assert {entry["entry"]: entry["score"] for entry in snapshot["entries"]} == {"a": 0.5, "b": 0.25}
    client = csrf_client(owner)
    assert f"<tbody>{message['rows']}</tbody>" in client.get(f"/t/{team.slug}/runs/{run.pk}/").content.decode()
    live = client.get(f"/t/{team.slug}/runs/{run.pk}/?format=live").json()
    assert live == {k: message[k] for k in ("snapshot", "rows")}
