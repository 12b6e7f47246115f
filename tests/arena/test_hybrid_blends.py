"""Hybrids: blends whose members are blends, from registration through runs, costs and serving."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.db.models import RestrictedError
from django.test import Client

from arena.evaluations.models import EntryState, Generation, RunEntry, Score, State
from arena.evaluations.services import create_run
from arena.registry.models import BlendMember, Entry
from arena.registry.services import check_blend_members, register_blend, register_model
from tests.factories import SuiteFactory, UserFactory
from tests.helpers import csrf_client, finished, wait_for

SUITE_SIZE = 16  # 8 dev + 8 test; runs report the 8 test items
MODELS = ("tiny-a", "tiny-b", "tiny-c")


@pytest.fixture
def models_root(tiny_variant, settings, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    for seed, name in enumerate(MODELS, start=1):
        tiny_variant(root / name, seed=seed)
    settings.ARENA_MODEL_ROOTS = [root]
    return root


@pytest.fixture
def models(team, owner, models_root):
    return {
        name: register_model(team, name=name, kind="hf", config={"path": str(models_root / name)}, user=owner)
        for name in MODELS
    }


def blend(team, name: str, members: list[str], strategy: str = "majority_vote", params: dict | None = None):
    return register_blend(team, name=name, strategy=strategy, params=params or {}, members=members)


# --- registration -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_blend_registers_as_a_member_of_another_blend_through_the_api(api, team, models):
    blend(team, "vote", ["tiny-a", "tiny-b", "tiny-c"])
    body = {"name": "cheap-first", "strategy": "cascade", "params": {"threshold": 1.0}, "members": ["vote", "tiny-a"]}
    response = api("post", "/blends", body)
    assert response.status_code == 201, response.content
    assert response.json()["members"] == ["vote", "tiny-a"]
    listed = {entry["name"]: entry for entry in api("get", "/entries").json()}
    assert listed["cheap-first"]["members"] == ["vote", "tiny-a"]


@pytest.mark.django_db
def test_nesting_deeper_than_four_blends_is_a_422_naming_the_chain_and_stores_nothing(api, team, models):
    blend(team, "level-1", ["tiny-a", "tiny-b"])
    for level in (2, 3, 4):
        response = api(
            "post",
            "/blends",
            {"name": f"level-{level}", "strategy": "majority_vote", "members": [f"level-{level - 1}", "tiny-c"]},
        )
        assert response.status_code == 201, response.content
    response = api(
        "post", "/blends", {"name": "level-5", "strategy": "majority_vote", "members": ["level-4", "tiny-c"]}
    )
    assert response.status_code == 422
    assert response.json()["detail"]["members"] == [
        "blends nest at most 4 deep, and level-5 -> level-4 -> level-3 -> level-2 -> level-1 would be 5"
    ]
    assert not Entry.objects.filter(name="level-5").exists()
    assert BlendMember.objects.count() == 2 * 4


@pytest.mark.django_db
def test_a_blend_cannot_name_itself_as_a_member(api, models):
    response = api("post", "/blends", {"name": "self", "strategy": "majority_vote", "members": ["self", "tiny-a"]})
    assert response.status_code == 422
    assert response.json()["detail"]["members"] == ["unknown entries: self"]
    assert not Entry.objects.filter(kind="blend").exists()


@pytest.mark.django_db
def test_the_member_check_refuses_a_cycle_naming_its_path(team, models):
    vote = blend(team, "vote", ["tiny-a", "tiny-b"])
    blend(team, "outer", ["vote", "tiny-c"])
    top = blend(team, "top", ["outer", "tiny-a"])
    with pytest.raises(ValidationError) as raised:
        check_blend_members(team, vote, [top, models["tiny-a"]])
    assert raised.value.message_dict == {"members": ["cycle: vote -> top -> outer -> vote"]}


@pytest.mark.django_db
def test_mixture_of_agents_that_asks_its_members_again_refuses_a_blend_member(api, team, models):
    blend(team, "vote", ["tiny-a", "tiny-b"])
    body = {
        "name": "moa",
        "strategy": "mixture_of_agents",
        "params": {"aggregator": "tiny-c", "layers": 2},
        "members": ["vote", "tiny-c"],
    }
    response = api("post", "/blends", body)
    assert response.status_code == 422
    assert response.json()["detail"]["params"] == [
        "mixture_of_agents asks its members for new answers, and vote is a blend; "
        "name model entries as proposers, or use layers: 1"
    ]
    body["params"] = {"aggregator": "tiny-c", "layers": 2, "proposers": ["tiny-a", "tiny-b"]}
    assert api("post", "/blends", body).status_code == 201


def admin_change(client, entry: Entry, members: list[Entry], by):
    """Save ``entry`` on the admin's change page with ``members`` as its member rows, registered ``by``."""
    links = list(entry.member_links.order_by("position"))
    data = {
        "team": entry.team_id,
        "name": entry.name,
        "kind": entry.kind,
        "description": entry.description,
        "config": json.dumps(entry.config),
        "strategy": entry.strategy,
        "params": json.dumps(entry.params),
        "created_by": by.pk,
        "member_links-TOTAL_FORMS": len(members),
        "member_links-INITIAL_FORMS": len(links),
        "member_links-MIN_NUM_FORMS": 0,
        "member_links-MAX_NUM_FORMS": 1000,
    }
    for i, member in enumerate(members):
        data[f"member_links-{i}-member"] = member.pk
        data[f"member_links-{i}-position"] = i
        data[f"member_links-{i}-blend"] = entry.pk
        if i < len(links):
            data[f"member_links-{i}-id"] = links[i].pk
    return client.post(f"/admin/registry/entry/{entry.pk}/change/", data)


@pytest.fixture
def staff_client():
    client = Client()
    client.force_login(UserFactory(username="stella", is_staff=True, is_superuser=True))
    return client


@pytest.mark.django_db
def test_the_admin_refuses_members_that_make_a_cycle_or_nest_too_deep(staff_client, owner, team, models):
    vote = blend(team, "vote", ["tiny-a", "tiny-b"])
    outer = blend(team, "outer", ["vote", "tiny-c"])
    response = admin_change(staff_client, vote, [outer, models["tiny-a"]], owner)
    assert response.status_code == 200
    assert "cycle: vote -&gt; outer -&gt; vote" in response.content.decode()
    assert vote.ordered_members() == [models["tiny-a"], models["tiny-b"]]

    side = blend(team, "side", ["tiny-b", "tiny-c"])
    blend(team, "top", ["outer", "tiny-a"])
    blend(team, "crown", ["top", "tiny-b"])
    response = admin_change(staff_client, vote, [side, models["tiny-a"]], owner)
    assert "blends nest at most 4 deep, and crown -&gt; top -&gt; outer -&gt; vote -&gt; side would be 5" in (
        response.content.decode()
    )
    assert vote.ordered_members() == [models["tiny-a"], models["tiny-b"]]

    response = admin_change(staff_client, vote, [models["tiny-a"], models["tiny-c"]], owner)
    assert response.status_code == 302
    assert vote.ordered_members() == [models["tiny-a"], models["tiny-c"]]


@pytest.mark.django_db
def test_a_blend_used_by_another_cannot_be_deleted_and_the_admin_says_by_which(staff_client, team, models):
    vote = blend(team, "vote", ["tiny-a", "tiny-b"])
    blend(team, "outer", ["vote", "tiny-c"])
    response = staff_client.post(f"/admin/registry/entry/{vote.pk}/delete/", {"post": "yes"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Cannot delete entry" in page and "vote in outer" in page
    assert Entry.objects.filter(pk=vote.pk).exists()
    with pytest.raises(RestrictedError):
        vote.delete()


@pytest.mark.django_db
def test_the_entry_page_links_nested_blends_both_ways(owner, team, models):
    vote = blend(team, "vote", ["tiny-a", "tiny-b"])
    outer = blend(team, "outer", ["vote", "tiny-c"])
    client = csrf_client(owner)
    page = client.get(f"/t/{team.slug}/entries/{outer.pk}/").content.decode()
    assert f'<a href="/t/{team.slug}/entries/{vote.pk}/">vote</a> <span class="kind">majority_vote</span>' in page
    page = client.get(f"/t/{team.slug}/entries/{vote.pk}/").content.decode()
    assert f'<dd id="used-by"><a href="/t/{team.slug}/entries/{outer.pk}/">outer</a></dd>' in page
    dashboard = client.get(f"/t/{team.slug}/").content.decode()
    assert f'<a href="/t/{team.slug}/entries/{vote.pk}/">vote</a> <span class="kind">blend</span>' in dashboard


# --- serving -------------------------------------------------------------------------------------------


def chat(client, token: str, model: str):
    body = {"model": model, "messages": [{"role": "user", "content": "What is 7 - 5 ?"}], "max_tokens": 4}
    response = client.post(
        "/v1/chat/completions", json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    return response.status_code, response.json()


@pytest.mark.django_db
def test_a_hybrid_is_served_with_each_model_generating_once(client, token, team, models):
    blend(team, "vote", list(MODELS))
    blend(team, "outer", ["vote", "tiny-a"])
    status, body = chat(client, token, "outer")
    assert status == 200, body
    how = body["arena"]["blend"]
    assert how["members"] == ["vote", "tiny-a"]
    assert how["inner"]["vote"]["members"] == list(MODELS)
    # tiny-a answered the vote and the outer blend from one generation, counted once in the usage.
    generations = list(Generation.objects.all())
    assert len(generations) == 3
    assert body["usage"]["total_tokens"] == sum(
        generation.prompt_tokens + generation.completion_tokens for generation in generations
    )
    assert chat(client, token, "outer")[1]["choices"] == body["choices"]
    assert Generation.objects.count() == 3


@pytest.mark.django_db
def test_a_hybrid_over_a_learned_blend_is_a_422_naming_it(client, token, team, models):
    blend(team, "stacked", ["tiny-a", "tiny-b"], strategy="stacking")
    blend(team, "outer", ["stacked", "tiny-c"])
    status, body = chat(client, token, "outer")
    assert status == 422
    assert body["error"]["message"].startswith("stacked uses stacking, which learns from a suite's dev split")
    assert not Generation.objects.exists()


# --- runs with real workers ---------------------------------------------------------------------------


def model_scores(run, item, names) -> dict[str, Score]:
    return {
        member_score.entry.name: member_score
        for member_score in Score.objects.filter(run=run, item=item, entry__name__in=names).select_related("entry")
    }


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_hybrid_runs_every_level_adds_costs_once_per_generation_and_runs_again_from_the_cache(
    worker, team, owner, models
):
    suite = SuiteFactory(team=team, size=SUITE_SIZE)
    vote = blend(team, "vote", list(MODELS))
    # Named to sort before the blends they hold, so advancing cannot rely on name order.
    cascade = blend(team, "b-cheap-first", ["vote", "tiny-a"], strategy="cascade", params={"threshold": 1.0})
    top = blend(team, "a-top", ["b-cheap-first", "vote", "tiny-b"])
    run = create_run(team, suite, [top], user=owner)
    assert set(RunEntry.objects.filter(run=run).values_list("entry__name", flat=True)) == {
        *MODELS,
        "vote",
        "b-cheap-first",
        "a-top",
    }
    run = wait_for(lambda: finished(run.pk), timeout=300, what="the run to finish")
    assert run.state == State.DONE, run.error

    rows = {run_entry.entry.name: run_entry for run_entry in RunEntry.objects.filter(run=run).select_related("entry")}
    items = SUITE_SIZE // 2  # the test split the run reports (no strategy here learns, so no dev)
    for name, run_entry in rows.items():
        assert run_entry.state == State.DONE and run_entry.n == items, name
        assert Score.objects.filter(run=run, entry=run_entry.entry).count() == items, name
    assert rows["b-cheap-first"].started_at >= rows["vote"].finished_at
    assert rows["a-top"].started_at >= rows["b-cheap-first"].finished_at

    deduplicated = 0
    for score in Score.objects.filter(run=run, entry=cascade).select_related("item"):
        # The cascade read the vote (all three models) and, when the vote was not unanimous, tiny-a
        # again: the same generation, counted once.
        assert score.details["consulted"] in (["vote"], ["vote", "tiny-a"])
        deduplicated += score.details["consulted"] == ["vote", "tiny-a"]
        scores = model_scores(run, score.item, MODELS)
        assert score.member_calls == 3
        assert score.tokens == sum(member_score.tokens for member_score in scores.values())
        assert score.compute_s == pytest.approx(sum(member_score.compute_s for member_score in scores.values()))
        # The vote waited for its slowest model, tiny-a among them; the cascade makes no calls of its own.
        assert score.latency_s == Score.objects.get(run=run, entry=vote, item=score.item).latency_s
    assert deduplicated > 0, "no item made the cascade read tiny-a a second time"
    for score in Score.objects.filter(run=run, entry=top).select_related("item"):
        scores = model_scores(run, score.item, MODELS)
        assert score.member_calls == 3  # tiny-a, tiny-b and tiny-c, however many branches reached them
        assert score.tokens == sum(member_score.tokens for member_score in scores.values())
    assert rows["a-top"].tokens == sum(
        Score.objects.filter(run=run, entry__name__in=MODELS, item__split="test").values_list("tokens", flat=True)
    )

    generations = Generation.objects.count()
    again = create_run(team, suite, [top], user=owner)
    again = wait_for(lambda: finished(again.pk), timeout=300, what="the second run to finish")
    assert again.state == State.DONE, again.error
    assert Generation.objects.count() == generations
    assert sum(RunEntry.objects.filter(run=again).values_list("new_calls", flat=True)) == 0
    for entry in (vote, cascade, top):
        first = dict(Score.objects.filter(run=run, entry=entry).values_list("item_id", "prediction"))
        assert dict(Score.objects.filter(run=again, entry=entry).values_list("item_id", "prediction")) == first


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_failed_inner_blend_fails_the_outer_with_its_reason(worker, team, owner, models, models_root):
    blend(team, "vote", ["tiny-a", "tiny-c"])
    outer = blend(team, "a-outer", ["vote", "tiny-b"], strategy="cascade", params={"threshold": 0.5})
    # tiny-c's weights vanish after registration, so it fails when the run is planned.
    for weights in (models_root / "tiny-c").glob("*.safetensors"):
        weights.unlink()
    suite = SuiteFactory(team=team, size=SUITE_SIZE)
    run = create_run(team, suite, [outer], user=owner)
    run = wait_for(lambda: finished(run.pk), timeout=240, what="the run to finish")

    # tiny-a and tiny-b finished: the run is a result, with errors.
    assert run.state == State.PARTIAL
    states = dict(RunEntry.objects.filter(run=run).values_list("entry__name", "state"))
    assert states == {
        "tiny-a": EntryState.DONE,
        "tiny-b": EntryState.DONE,
        "tiny-c": EntryState.FAILED,
        "vote": EntryState.FAILED,
        "a-outer": EntryState.FAILED,
    }
    assert RunEntry.objects.get(run=run, entry=outer).error == "member failed: vote (member failed: tiny-c)"
    assert not Score.objects.filter(run=run, entry__kind="blend").exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_learned_blend_is_served_as_fitted_on_the_dev_split_of_its_latest_run(
    worker, client, token, team, owner, models
):
    stacked = blend(team, "stacked", ["tiny-a", "tiny-b"], strategy="weighted_vote")
    blend(team, "outer", ["stacked", "tiny-c"])
    suite = SuiteFactory(team=team, size=SUITE_SIZE)
    run = create_run(team, suite, [stacked], user=owner)
    assert set(run.splits) == {"dev", "test"}  # a learned blend brings its dev split into the run
    run = wait_for(lambda: finished(run.pk), timeout=300, what="the run to finish")
    assert run.state == State.DONE, run.error

    status, body = chat(client, token, "stacked")
    assert status == 200, body
    how = body["arena"]["blend"]
    assert how["fitted_on"] == {"run": run.pk, "suite": "arithmetic", "split": "dev"}
    # The weights served are the ones the run's combine learned from the same dev answers.
    stored = Score.objects.filter(run=run, entry=stacked).first().details["member_weights"]
    assert how["member_weights"] == stored
    # A hybrid over it serves the fitted inner blend too.
    status, body = chat(client, token, "outer")
    assert status == 200, body
    assert body["arena"]["blend"]["inner"]["stacked"]["fitted_on"]["run"] == run.pk
