"""Blend search in the arena: started from a finished run, run by a worker, registered and run as an entry."""

from __future__ import annotations

import json
import math

import plotly.graph_objects as go
import pytest
from django.core.exceptions import ValidationError

from arena.evaluations.blends import serving_combiner
from arena.evaluations.models import EntryState, Generation, Run, RunEntry, Score, State
from arena.evaluations.services import create_run
from arena.registry.models import Entry
from arena.registry.services import register_model
from arena.search import services
from arena.search.charts import search_chart
from arena.search.models import BlendSearch
from arena.teams.models import ApiToken, Role, Team
from ensembles.search import verdict
from ensembles.suites import Suite as LibSuite
from ensembles.suites import get_builtin
from tests.factories import BlendFactory, EntryFactory, RunEntryFactory, RunFactory, SuiteFactory
from tests.helpers import csrf_client, finished, post_form, wait_for

# --- A finished run built by hand (no worker) ----------------------------------------------------

# Which dev/test items each member gets right, by position: "a" is the best, "c" the cheapest.
RIGHT = {"a": lambda i: i % 10 < 7, "b": lambda i: i % 10 in (0, 3, 5, 7, 9), "c": lambda i: i % 10 in (1, 2, 8)}
COST = {"a": (1, 90, 2.0), "b": (1, 60, 1.0), "c": (1, 30, 0.25)}


def hand_run(team, *, splits=("dev", "test"), state=State.DONE) -> tuple[Run, dict[str, Entry]]:
    suite = SuiteFactory(team=team, size=40)
    lib = {item.id: item for item in get_builtin("arithmetic", size=40).items}
    entries = {name: EntryFactory(team=team, name=name) for name in RIGHT}
    run = RunFactory(suite=suite, splits=list(splits), state=state)
    rows = list(suite.items.filter(split__in=splits).order_by("position"))
    for name, entry in entries.items():
        RunEntryFactory(run=run, entry=entry, state=EntryState.DONE if state == State.DONE else EntryState.RUNNING)
        calls, tokens, seconds = COST[name]
        Score.objects.bulk_create(
            Score(
                run=run,
                entry=entry,
                item=row,
                prediction=(ref := lib[row.key].reference) if RIGHT[name](i) else f"{ref}{len(name)}9",
                value=float(RIGHT[name](i)),
                details={"mean_logprob": math.log(0.9 if RIGHT[name](i) else 0.5)},
                member_calls=calls,
                tokens=tokens,
                compute_s=seconds,
            )
            for i, row in enumerate(rows)
        )
    return run, entries


@pytest.fixture
def no_encoder(settings, tmp_path):
    # Without the shipped encoder the router is left out: these tests need not load MiniLM.
    settings.MODELS_DIR = tmp_path


def finished_search(pk: int):
    search = BlendSearch.objects.get(pk=pk)
    return search if search.state in (State.DONE, State.FAILED) else None


@pytest.mark.django_db
def test_the_search_reads_only_dev_answers_so_changing_every_test_answer_changes_nothing(team, owner, no_encoder):
    run, _ = hand_run(team)
    first = services.start_search(team, run, members=["a", "b", "c"], budget_metric="seconds", budget=2.5)
    services.run_search(first.pk)
    first.refresh_from_db()
    assert first.state == State.DONE, first.error

    dev_keys = {item.key for item in services.dev_items(first)[0]}
    assert dev_keys == set(run.suite.items.filter(split="dev").values_list("key", flat=True))
    Score.objects.filter(run=run, item__split="test").update(prediction="garbage", value=1.0, details={})
    second = services.start_search(team, run, members=["a", "b", "c"], budget_metric="seconds", budget=2.5)
    services.run_search(second.pk)
    second.refresh_from_db()
    first.results.pop("seconds"), second.results.pop("seconds")
    assert second.results == first.results


@pytest.mark.django_db
def test_a_finished_search_keeps_every_candidate_the_pareto_set_and_its_own_cost(team, no_encoder):
    run, _ = hand_run(team)
    search = services.start_search(team, run, members=["a", "b", "c"], budget_metric="calls", budget=1.5)
    services.run_search(search.pk)
    search.refresh_from_db()
    results = search.results
    assert search.state == State.DONE
    assert search.candidates_evaluated == search.candidates_total == len(results["candidates"]) > 20
    assert search.seconds > 0
    assert results["pareto"]
    for i in results["pareto"]:
        candidate = results["candidates"][i]
        assert candidate["within_budget"] and candidate["cost"]["calls"] <= 1.5
    assert any(not candidate["within_budget"] for candidate in results["candidates"] if not candidate["error"])
    assert [member["members"] for member in results["members"]] == [["a"], ["b"], ["c"]]
    assert "router" in results["left_out"]
    fig = search_chart(results, "calls", 1.5)
    go.Figure(fig)  # plotly checks every property against its schema
    names = [trace["name"] for trace in fig["data"]]
    assert names[-1] == "Pareto set" and "member alone" in names and "over budget" in names
    assert fig["layout"]["shapes"][0]["x0"] == 1.5


@pytest.mark.django_db
def test_the_search_page_says_from_the_numbers_whether_a_blend_beats_the_best_member_alone(team, owner, no_encoder):
    run, _ = hand_run(team)
    search = services.start_search(team, run, members=["a", "b", "c"], budget_metric="calls")
    services.run_search(search.pk)
    search.refresh_from_db()
    results = search.results
    # No candidate only ever consults one member (such as selecting k=1 member): those are the members alone.
    assert not any(
        candidate["strategy"] == "mi_selection" and candidate["params"]["k"] == 1 for candidate in results["candidates"]
    )
    assert all(len(candidate["members"]) >= 2 for candidate in results["candidates"])

    page = csrf_client(owner).get(f"/t/red/searches/{search.pk}/")
    assert page.status_code == 200
    best_member = max(results["members"], key=lambda member: member["quality"])
    said = page.context["verdict"]
    assert said == verdict(results) and said["member"] == best_member["members"][0] == "a"
    claim = said["candidate"]
    assert said["beats"] == (claim["quality"] - claim["stderr"] > best_member["quality"])
    assert said["text"].startswith(
        f"{claim['label']} beats a alone on dev" if said["beats"] else "No blend beats a alone"
    )
    assert f"{claim['quality']:.2f} ± {claim['stderr']:.2f} vs {best_member['quality']:.2f}" in said["text"]
    html = page.content.decode()
    assert 'id="search-verdict"' in html and "reference points, not blends" in html
    # Only candidates get a register form; the members alone are reference points.
    assert html.count('name="candidate"') == len(page.context["pareto"])


@pytest.mark.django_db
def test_a_stored_one_member_candidate_is_refused_at_registration_and_kept_off_the_pareto_table(
    team, owner, no_encoder
):
    run, _ = hand_run(team)
    search = services.start_search(team, run, members=["a", "b", "c"], budget_metric="calls")
    services.run_search(search.pk)
    search.refresh_from_db()
    # A search stored before one-member settings were left out could hold one on its Pareto set.
    old = {**search.results["members"][0], "strategy": "mi_selection", "params": {"k": 1}, "members": ["a", "b"]}
    search.results = {**search.results, "candidates": [*search.results["candidates"], old]}
    search.results["pareto"] = [*search.results["pareto"], len(search.results["candidates"]) - 1]
    search.save(update_fields=["results"])
    client = csrf_client(owner)
    index = len(search.results["candidates"]) - 1
    page = client.get(f"/t/red/searches/{search.pk}/")
    assert index not in [r["index"] for r in page.context["pareto"]]
    refused = post_form(client, f"/t/red/searches/{search.pk}/register/", {"candidate": str(index), "name": "one"})
    assert refused.status_code == 422 and b"only ever consults one member" in refused.content
    assert not Entry.objects.filter(kind="blend").exists()


# --- Bad input: a clear 4xx, nothing stored ------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"members": ["a", "nobody"]}, "members"),
        ({"members": ["a"]}, "members"),
        ({"members": ["a", "a"]}, "members"),
        ({"members": ["a", "b"], "budget": 0}, "budget"),
        ({"members": ["a", "b"], "budget": -1}, "budget"),
        ({"members": ["a", "b"], "budget": 65}, "budget"),
        ({"members": ["a", "b"], "budget_metric": "dollars"}, "budget_metric"),
        ({"members": ["a", "b"], "folds": 1}, "folds"),
        ({"members": ["a", "b"], "folds": 11}, "folds"),
    ],
)
def test_bad_search_input_answers_422_naming_the_field_and_stores_nothing(api, team, body, field):
    run, _ = hand_run(team)
    response = api("post", f"/runs/{run.pk}/searches", body)
    assert response.status_code == 422, response.content
    assert field in response.json()["detail"]
    assert not BlendSearch.objects.exists()


@pytest.mark.django_db
def test_a_run_that_has_not_finished_or_has_no_dev_split_cannot_be_searched(api, team):
    running, _ = hand_run(team, state=State.RUNNING)
    response = api("post", f"/runs/{running.pk}/searches", {"members": ["a", "b"]})
    assert response.status_code == 422 and "running" in response.json()["detail"]["run"][0]
    Run.objects.filter(pk=running.pk).update(state=State.DONE, splits=["test"])
    RunEntry.objects.filter(run=running).update(state=EntryState.DONE)
    response = api("post", f"/runs/{running.pk}/searches", {"members": ["a", "b"]})
    assert response.status_code == 422 and "no dev split" in response.json()["detail"]["run"][0]
    assert not BlendSearch.objects.exists()


@pytest.mark.django_db
def test_a_run_finished_with_errors_is_searched_and_served_over_the_entries_that_finished(team, no_encoder):
    run, entries = hand_run(team)
    broken = EntryFactory(team=team, name="d")
    RunEntryFactory(run=run, entry=broken, state=EntryState.FAILED, error="its files are gone")
    Run.objects.filter(pk=run.pk).update(state=State.PARTIAL)
    run.refresh_from_db()
    assert services.searchable_members(run) == ["a", "b", "c"]
    with pytest.raises(ValidationError, match="not finished entries"):
        services.start_search(team, run, members=["a", "d"], budget_metric="calls")
    search = services.start_search(team, run, members=["a", "b", "c"], budget_metric="calls")
    services.run_search(search.pk)
    assert BlendSearch.objects.get(pk=search.pk).state == State.DONE
    # A learned blend of the finished members is served as fitted on this run's dev answers.
    weighted = BlendFactory(team=team, name="weighted", strategy="weighted_vote", members=[entries["a"], entries["b"]])
    RunEntryFactory(run=run, entry=weighted)
    assert serving_combiner(weighted).run_id == run.pk


@pytest.mark.django_db
def test_another_team_s_run_and_search_answer_404_and_a_viewer_token_403(api, team, no_encoder):
    run, _ = hand_run(team)
    search = services.start_search(team, run, members=["a", "b"])
    _, blue = ApiToken.issue(Team.objects.get(slug="blue"), "blue", role=Role.OWNER)
    assert api("post", f"/runs/{run.pk}/searches", {"members": ["a", "b"]}, auth=blue).status_code == 404
    assert api("get", f"/searches/{search.pk}", auth=blue).status_code == 404
    _, viewer = ApiToken.issue(team, "viewer", role=Role.VIEWER)
    assert api("post", f"/runs/{run.pk}/searches", {"members": ["a", "b"]}, auth=viewer).status_code == 403
    assert api("get", f"/searches/{search.pk}", auth=viewer).json()["state"] == State.QUEUED
    assert BlendSearch.objects.count() == 1


@pytest.mark.django_db
def test_the_run_page_form_refuses_a_bad_budget_with_422_and_a_viewer_with_403(team, owner, viewer):
    run, _ = hand_run(team)
    client = csrf_client(owner)
    page = client.get(f"/t/red/runs/{run.pk}/")
    assert b'id="start-search"' in page.content
    response = post_form(
        client, f"/t/red/runs/{run.pk}/searches/", {"members": ["a", "b"], "budget_metric": "calls", "budget": "abc"}
    )
    assert response.status_code == 422 and b"budget: budget must be a number" in response.content
    refused = post_form(csrf_client(viewer), f"/t/red/runs/{run.pk}/searches/", {"members": ["a", "b"]})
    assert refused.status_code == 403
    assert b'id="start-search"' not in csrf_client(viewer).get(f"/t/red/runs/{run.pk}/").content
    assert not BlendSearch.objects.exists()


@pytest.mark.django_db
def test_registering_refuses_an_unknown_candidate_or_a_taken_name_and_stores_nothing(team, owner, no_encoder):
    run, _ = hand_run(team)
    search = services.start_search(team, run, members=["a", "b", "c"])
    client = csrf_client(owner)
    url = f"/t/red/searches/{search.pk}/register/"
    early = post_form(client, url, {"candidate": "0", "name": "x", "run": "on"})
    assert early.status_code == 422 and b"register once it is done" in early.content
    services.run_search(search.pk)
    unknown = post_form(client, url, {"candidate": "9999", "name": "x", "run": "on"})
    assert unknown.status_code == 422 and b"candidate: no candidate 9999" in unknown.content
    taken = post_form(client, url, {"candidate": "0", "name": "a", "run": "on"})
    assert taken.status_code == 422 and b"already has an entry named" in taken.content
    assert not Entry.objects.filter(kind="blend").exists()
    assert Run.objects.count() == 1


# --- End to end with a real worker ---------------------------------------------------------------


def mc_suite() -> LibSuite:
    # Four options scored by log-likelihood: random tiny models are right about a quarter of the time,
    # each on other items, which leaves a search something to find.
    base = get_builtin("mc_knowledge", size=24)
    return LibSuite(base.manifest.model_copy(update={"scoring": "loglikelihood_norm", "name": "mc-search"}), base.items)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_search_from_a_finished_run_registers_its_best_blend_whose_run_costs_no_new_call(
    worker, team, owner, api, tiny_variant, settings, tmp_path
):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    members = [
        register_model(
            team,
            name=f"tiny-{seed}",
            kind="hf",
            config={"path": str(tiny_variant(root / f"tiny-{seed}", seed=seed))},
        )
        for seed in (1, 2, 3)
    ]
    suite = SuiteFactory(team=team, library=mc_suite())
    first = create_run(team, suite, members, splits=["dev", "test"], user=owner)
    run = wait_for(lambda: finished(first.pk), timeout=180, what="the members' run")
    assert run.state == State.DONE, run.error

    names = [member.name for member in members]
    started = api("post", f"/runs/{run.pk}/searches", {"members": names, "budget_metric": "calls", "budget": 2.5})
    assert started.status_code == 201, started.content
    search = wait_for(lambda: finished_search(started.json()["id"]), timeout=240, what="the search")
    assert search.state == State.DONE, search.error
    body = api("get", f"/searches/{search.pk}").json()
    assert body["candidates_evaluated"] == len(body["candidates"]) > 50 and body["seconds"] > 0
    assert "router" not in body["left_out"]  # the shipped encoder is at hand, so the router was searched
    assert any(
        candidate["strategy"] == "logprob_pool" for candidate in body["candidates"]
    )  # the members scored options
    assert body["pareto"] and all(candidate["cost"]["calls"] <= 2.5 for candidate in body["pareto"])
    assert body["verdict"] == verdict({**body, "members": body["members_alone"], "metric": "calls"})

    client = csrf_client(owner)
    page = client.get(f"/t/red/searches/{search.pk}/")
    assert page.status_code == 200 and b"The Pareto set" in page.content and b'id="fig-search"' in page.content
    go.Figure(page.context["chart"])

    best = body["pareto"][-1]
    generations = Generation.objects.count()
    response = post_form(
        client,
        f"/t/red/searches/{search.pk}/register/",
        {"candidate": str(best["index"]), "name": "found", "run": "on"},
    )
    assert response.status_code == 302, response.content
    blend = Entry.objects.get(team=team, name="found")
    assert blend.strategy == best["strategy"] and blend.params == best["params"]
    assert [member.name for member in blend.ordered_members()] == best["members"]
    second = Run.objects.exclude(pk=run.pk).get()
    assert response["Location"] == f"/t/red/runs/{second.pk}/"
    second = wait_for(lambda: finished(second.pk), timeout=180, what="the found blend's run")
    assert second.state == State.DONE, second.error
    found = RunEntry.objects.get(run=second, entry=blend)
    assert found.state == State.DONE and found.n == suite.items.filter(split="test").count()
    assert found.ci_low <= found.score <= found.ci_high
    # The members' answers came from the generation cache: registering and running the find called no model.
    assert Generation.objects.count() == generations
    assert sum(RunEntry.objects.filter(run=second).values_list("new_calls", flat=True)) == 0
    assert json.loads(json.dumps(BlendSearch.objects.get(pk=search.pk).registered)) == {str(best["index"]): "found"}
    assert b"registered as <strong>found</strong>" in client.get(f"/t/red/searches/{search.pk}/").content
