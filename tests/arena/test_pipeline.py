"""A run end to end with real worker processes, a real Redis and the test database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from arena.evaluations import queries as run_queries
from arena.evaluations.models import TERMINAL, EntryState, Generation, Run, RunEntry, Score, State
from arena.evaluations.services import create_run
from arena.leaderboard import queries as board_queries
from arena.leaderboard.routing import websocket_urlpatterns
from arena.registry.models import Entry, Kind
from arena.registry.services import register_blend, register_model
from arena.search import services as search_services
from arena.search.models import BlendSearch
from arena.teams.models import ApiToken, Role, Team
from tests.factories import EntryFactory, SuiteFactory
from tests.helpers import csrf_client, finished, post_form, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SUITE_SIZE = 16  # 8 dev + 8 test


@pytest.fixture
def models_root(tiny_variant, settings, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    a = tiny_variant(root / "tiny-a", seed=1)
    b = tiny_variant(root / "tiny-b", seed=2)
    c = tiny_variant(root / "tiny-c", seed=3)
    settings.ARENA_MODEL_ROOTS = [root]
    return root, (a, b, c)


@pytest.fixture
def setup_entries(team, owner, models_root):
    _, paths = models_root
    members = []
    for name, path in zip(("tiny-a", "tiny-b", "tiny-c"), paths, strict=True):
        members.append(register_model(team, name=name, kind="hf", config={"path": str(path)}, user=owner))
    blend = register_blend(
        team, name="vote", strategy="majority_vote", params={}, members=[member.name for member in members]
    )
    suite = SuiteFactory(team=team, size=SUITE_SIZE)
    return suite, members, blend


def test_run_scores_every_item_of_every_member_and_the_blend_once(worker, team, owner, setup_entries, client):
    suite, members, blend = setup_entries
    run = create_run(team, suite, [*members, blend], user=owner)
    run = wait_for(lambda: finished(run.pk), timeout=180, what="the run to finish")

    assert run.state == State.DONE, run.error
    test_items = SUITE_SIZE // 2
    for entry in [*members, blend]:
        assert Score.objects.filter(run=run, entry=entry).count() == test_items
        run_entry = RunEntry.objects.get(run=run, entry=entry)
        assert run_entry.state == State.DONE
        assert run_entry.n == test_items
        assert run_entry.ci_low <= run_entry.score <= run_entry.ci_high
    vote = RunEntry.objects.get(run=run, entry=blend)
    assert vote.best_member is not None and vote.lift is not None
    assert vote.lift_low <= vote.lift <= vote.lift_high
    assert 0.0 <= vote.lift_p <= 1.0  # exact-match scores are binary, so McNemar's test applies
    assert vote.member_calls == 3 * test_items
    # Every blend score follows the majority of its members' stored predictions.
    for score in Score.objects.filter(run=run, entry=blend):
        votes = score.details["votes"]
        assert votes[max(votes, key=votes.get)] >= max(votes.values())

    board = board_queries.board(team, suite.name)
    assert {r["entry"] for r in board["rows"]} == {"tiny-a", "tiny-b", "tiny-c", "vote"}
    assert all(r["rank_upper_bound"] >= 1 for r in board["rows"])

    # What the members leave for a blend: oracle, headroom, redundancy.
    diversity = run_queries.run_diversity(run)
    assert diversity["members"] == ["tiny-a", "tiny-b", "tiny-c"]
    assert diversity["items"] == test_items
    best = max(RunEntry.objects.get(run=run, entry=member).score for member in members)
    assert diversity["best_mean"] == pytest.approx(best, abs=1e-4)
    assert best <= diversity["oracle"] <= 1.0
    assert diversity["headroom"] == pytest.approx(diversity["oracle"] - best, abs=1e-3)
    assert 1.0 <= diversity["effective_members"] <= 3.0
    assert len(diversity["kappa"]) == 3 and all(len(row) == 3 for row in diversity["error_correlation"])
    client.force_login(owner)
    page = client.get(f"/t/red/runs/{run.pk}/")
    assert b"headroom of" in page.content and b"Cohen's kappa" in page.content
    # Exact match is right or wrong: the run page also says whether adding members pays.
    curve = page.context["size_curve"]
    assert curve["sizes"] == [1, 2, 3] and len(curve["predicted"]) == len(curve["measured"]["test"]) == 3
    assert curve["reading"] and b"Does adding members pay?" in page.content


def test_a_second_run_of_new_blends_makes_no_new_model_calls(worker, team, owner, setup_entries):
    suite, members, blend = setup_entries
    first = create_run(team, suite, [*members, blend], user=owner)
    assert wait_for(lambda: finished(first.pk), timeout=180).state == State.DONE
    generations = Generation.objects.count()

    shortest = register_blend(
        team,
        name="vote-shortest",
        strategy="majority_vote",
        params={"tie_break": "shortest"},
        members=[member.name for member in members],
    )
    second = create_run(team, suite, [blend, shortest], user=owner)
    second = wait_for(lambda: finished(second.pk), timeout=180)

    assert second.state == State.DONE, second.error
    assert Generation.objects.count() == generations
    assert sum(RunEntry.objects.filter(run=second).values_list("new_calls", flat=True)) == 0
    assert Score.objects.filter(run=second, entry=shortest).count() == SUITE_SIZE // 2


def test_a_broken_member_fails_its_entry_and_blend_with_the_reason_while_others_finish(
    worker, team, owner, setup_entries, models_root
):
    suite, members, _ = setup_entries
    root, _ = models_root
    broken = root / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)  # right magic, nothing a loader can read
    # Registration refuses both; these are a file that broke and an endpoint that went down since.
    bad = EntryFactory(team=team, name="broken", kind=Kind.GGUF, config={"path": str(broken)}, created_by=owner)
    down = EntryFactory(
        team=team,
        name="unreachable",
        kind=Kind.OPENAI,
        created_by=owner,
        config={"base_url": "http://127.0.0.1:9/v1", "model": "x", "max_retries": 0, "timeout_s": 2},
    )
    blend = register_blend(
        team, name="vote-with-broken", strategy="majority_vote", params={}, members=[members[0].name, bad.name]
    )
    run = create_run(team, suite, [members[0], bad, down, blend], user=owner)
    run = wait_for(lambda: finished(run.pk), timeout=240, what="the run to finish")

    # tiny-a finished: a result, with errors beside it.
    assert run.state == State.PARTIAL
    assert "broken" in run.error and "unreachable" in run.error
    states = dict(RunEntry.objects.filter(run=run).values_list("entry__name", "state"))
    assert states == {
        "tiny-a": EntryState.DONE,
        "broken": EntryState.FAILED,
        "unreachable": EntryState.FAILED,
        "vote-with-broken": EntryState.FAILED,
    }
    assert "GGUF" in RunEntry.objects.get(run=run, entry=bad).error
    assert "unreachable" in RunEntry.objects.get(run=run, entry=down).error
    assert "member failed: broken" in RunEntry.objects.get(run=run, entry=blend).error
    assert Score.objects.filter(run=run, entry=members[0]).count() == SUITE_SIZE // 2


def test_the_leaderboard_socket_hears_scores_as_they_are_stored(worker, team, owner, setup_entries):
    suite, members, blend = setup_entries
    app = URLRouter(websocket_urlpatterns)

    async def listen():
        communicator = WebsocketCommunicator(app, f"/ws/t/{team.slug}/leaderboard/{suite.name}/")
        communicator.scope["user"] = owner
        connected, _ = await communicator.connect()
        assert connected
        from asgiref.sync import sync_to_async

        run = await sync_to_async(create_run)(team, suite, [*members, blend], user=owner)
        seen = []
        while True:
            message = await communicator.receive_json_from(timeout=180)
            seen.append(message["event"])
            if message["event"] == "finished":
                break
        await communicator.disconnect()
        return run, seen

    run, seen = asyncio.run(listen())
    assert "progress" in seen and "result" in seen
    assert seen[-1] == "finished"
    assert Run.objects.get(pk=run.pk).state == State.DONE


def test_an_outsider_cannot_subscribe_to_another_teams_run(
    transactional_db, clean_redis, team, outsider, owner, setup_entries
):
    suite, members, _ = setup_entries
    run = create_run(team, suite, members, user=owner)
    app = URLRouter(websocket_urlpatterns)

    async def try_connect(user):
        communicator = WebsocketCommunicator(app, f"/ws/t/{team.slug}/runs/{run.pk}/")
        communicator.scope["user"] = user
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    assert asyncio.run(try_connect(outsider)) == (False, 4404)
    assert asyncio.run(try_connect(owner))[0] is True
    assert get_channel_layer().__class__.__name__ == "RedisChannelLayer"
    assert Entry.objects.filter(team=team).count() == 4


def test_a_websocket_from_a_foreign_origin_is_refused(transactional_db, clean_redis, team, owner):
    from arena.asgi import application

    async def try_origin(origin: bytes):
        communicator = WebsocketCommunicator(
            application,
            f"/ws/t/{team.slug}/leaderboard/arithmetic/",
            headers=[(b"origin", origin), (b"host", b"localhost")],
        )
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    assert asyncio.run(try_origin(b"http://evil.example")) is False


def test_learned_blends_fit_on_dev_and_report_test_with_what_they_consulted(worker, team, owner, setup_entries):
    suite, members, _ = setup_entries
    names = [member.name for member in members]
    weighted = register_blend(team, name="weighted", strategy="weighted_vote", params={}, members=names)
    cascade = register_blend(team, name="cascade", strategy="cascade", params={"max_cost": 1.5}, members=names)
    run = create_run(team, suite, [weighted, cascade], user=owner)
    assert run.splits == ["test", "dev"]
    run = wait_for(lambda: finished(run.pk), timeout=240, what="the run to finish")

    assert run.state == State.DONE, run.error
    test_items = SUITE_SIZE // 2
    for blend in (weighted, cascade):
        assert Score.objects.filter(run=run, entry=blend).count() == SUITE_SIZE
        assert RunEntry.objects.get(run=run, entry=blend).n == test_items
    consulted = [score.member_calls for score in Score.objects.filter(run=run, entry=cascade)]
    assert all(1 <= calls <= 3 for calls in consulted)
    first = Score.objects.filter(run=run, entry=cascade).first()
    assert first.details["consulted"][0] == "tiny-a"
    # Members evaluated only as a blend's members still appear on the leaderboard beside it.
    board = board_queries.board(team, suite.name)
    assert {r["entry"] for r in board["rows"]} == {"tiny-a", "tiny-b", "tiny-c", "weighted", "cascade"}


def test_a_run_with_a_failed_member_finishes_with_errors_and_retrying_reruns_only_what_failed(
    worker, team, owner, teammate, viewer, outsider, setup_entries, client
):
    suite, members, blend = setup_entries
    gone, away = Path(members[2].config["path"]), Path(members[2].config["path"] + "-away")
    gone.rename(away)  # tiny-c's files vanish after it was registered
    run = create_run(team, suite, [*members, blend], splits=["dev", "test"], user=owner)
    run = wait_for(lambda: finished(run.pk), timeout=240, what="the run to finish")

    assert run.state == State.PARTIAL and "tiny-c" in run.error
    states = dict(RunEntry.objects.filter(run=run).values_list("entry__name", "state"))
    assert states == {
        "tiny-a": EntryState.DONE,
        "tiny-b": EntryState.DONE,
        "tiny-c": EntryState.FAILED,
        "vote": EntryState.FAILED,
    }
    # What finished is ranked on the board and analysed on the run page.
    board = board_queries.board(team, suite.name)
    ranked = {r["entry"]: r for r in board["rows"] if r["rank_upper_bound"] is not None}
    assert set(ranked) == {"tiny-a", "tiny-b"} and all(r["score"] is not None for r in ranked.values())
    assert run_queries.run_diversity(run)["members"] == ["tiny-a", "tiny-b"]
    assert run_queries.size_curve(run)["sizes"] == [1, 2]
    client.force_login(owner)
    page = client.get(f"/t/red/runs/{run.pk}/")
    assert b"Finished with errors" in page.content and b"Retry failed" in page.content
    assert b"headroom of" in page.content and b"Does adding members pay?" in page.content
    client.force_login(viewer)
    assert b"Retry failed" not in client.get(f"/t/red/runs/{run.pk}/").content

    # A blend search reads the members that finished.
    search = search_services.start_search(team, run, members=["tiny-a", "tiny-b"], budget_metric="calls")
    search = wait_for(
        lambda: BlendSearch.objects.filter(pk=search.pk, state__in=TERMINAL).first(), timeout=120, what="the search"
    )
    assert search.state == State.DONE, search.error

    # Retrying: a viewer is refused, an outsider sees nothing, on the page and through the API.
    url = f"/t/red/runs/{run.pk}/retry/"
    assert post_form(csrf_client(viewer), url, {}).status_code == 403
    assert post_form(csrf_client(outsider), url, {}).status_code == 404
    viewer_token = ApiToken.issue(team, "viewer", role=Role.VIEWER)[1]
    blue_token = ApiToken.issue(Team.objects.get(slug="blue"), "blue", role=Role.OWNER)[1]
    for token, status in ((viewer_token, 403), (blue_token, 404)):
        response = client.post(f"/api/v1/runs/{run.pk}/retry", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == status
    assert Run.objects.get(pk=run.pk).state == State.PARTIAL

    away.rename(gone)
    generations = Generation.objects.count()
    calls = dict(RunEntry.objects.filter(run=run).values_list("entry__name", "new_calls"))
    assert post_form(csrf_client(teammate), url, {}).status_code == 302
    run = wait_for(lambda: finished(run.pk), timeout=240, what="the retried run to finish")

    assert run.state == State.DONE, run.error
    assert set(RunEntry.objects.filter(run=run).values_list("state", flat=True)) == {EntryState.DONE}
    after = dict(RunEntry.objects.filter(run=run).values_list("entry__name", "new_calls"))
    # Only tiny-c generated anything; what tiny-a and tiny-b answered was kept.
    assert after["tiny-a"] == calls["tiny-a"] and after["tiny-b"] == calls["tiny-b"]
    assert after["tiny-c"] == SUITE_SIZE and Generation.objects.count() == generations + SUITE_SIZE
    assert Score.objects.filter(run=run, entry=blend).count() == SUITE_SIZE
    assert run_queries.size_curve(run)["sizes"] == [1, 2, 3]
    # Nothing failed is left to retry: a clear 422.
    member_token = ApiToken.issue(team, "member", role=Role.MEMBER)[1]
    response = client.post(f"/api/v1/runs/{run.pk}/retry", HTTP_AUTHORIZATION=f"Bearer {member_token}")
    assert response.status_code == 422 and "failed entries" in response.json()["detail"]["run"][0]
