"""The run page's "Does adding members pay?": the measured vote of the best n members and the copula model."""

from __future__ import annotations

from html import escape

import numpy as np
import pytest
from scipy import stats as sps

from arena.evaluations import analysis, queries
from arena.evaluations.models import Run, Score, State
from ensembles import copula
from tests.factories import BlendFactory, EntryFactory, RunEntryFactory, RunFactory, SuiteFactory
from tests.helpers import csrf_client

pytestmark = pytest.mark.django_db

ACCURACY = {"a": 0.75, "b": 0.65, "c": 0.6, "d": 0.55}


@pytest.fixture
def suite(team):
    return SuiteFactory(team=team, size=40)  # 20 dev + 20 test items


def make_run(team, suite, *, splits=("dev", "test"), state=State.DONE, value=lambda right: float(right)) -> Run:
    """Four single models whose correctness shares a latent factor, and a vote over them.

    Right answers agree; each member's wrong answers are its own, as on an open question.
    """
    run = RunFactory(team=team, suite=suite, splits=list(splits), state=state)
    items = list(suite.items.filter(split__in=splits).order_by("position"))
    latent = np.random.default_rng(7).multivariate_normal(
        np.zeros(4), np.full((4, 4), 0.5) + 0.5 * np.eye(4), len(items)
    )
    right = latent < sps.norm.ppf(list(ACCURACY.values()))
    members = [EntryFactory(team=team, name=name) for name in ACCURACY]
    vote = BlendFactory(team=team, name="vote", members=members)
    for col, entry in enumerate(members):
        RunEntryFactory(run=run, entry=entry, state=state, total_items=len(items), done_items=len(items))
        for row, item in enumerate(items):
            ok = bool(right[row, col])
            Score.objects.create(
                run=run, entry=entry, item=item, prediction="42" if ok else f"{entry.name}-{row}", value=value(ok)
            )
    RunEntryFactory(run=run, entry=vote, state=state)
    return run


def accuracy_on(run: Run, name: str, split: str) -> float:
    values = Score.objects.filter(run=run, entry__name=name, item__split=split).values_list("value", flat=True)
    return sum(values) / len(values)


def test_a_finished_run_shows_whether_adding_members_pays_in_its_json_api_and_page(owner, team, suite, api):
    run = make_run(team, suite)
    client = csrf_client(owner)
    curve = client.get(f"/t/{team.slug}/runs/{run.pk}/?format=json").json()["size_curve"]

    dev = {n: accuracy_on(run, n, "dev") for n in ACCURACY}
    assert curve["members"] == sorted(dev, key=lambda n: (-dev[n], n))
    assert curve["sizes"] == [1, 2, 3, 4] and curve["fit_split"] == "dev"
    assert curve["items"] == {"dev": 20, "test": 20}
    assert curve["accuracy"] == pytest.approx([dev[n] for n in curve["members"]])
    assert len(curve["predicted"]) == 4 and all(0.0 <= probability <= 1.0 for probability in curve["predicted"])
    # A vote of one is the best dev member alone, on either split.
    best = curve["members"][0]
    assert curve["measured"]["dev"][0] == pytest.approx(dev[best])
    assert curve["measured"]["test"][0] == pytest.approx(accuracy_on(run, best, "test"))
    assert len(curve["measured"]["dev"]) == len(curve["measured"]["test"]) == 4
    # The asymptote follows from the fitted means, and the reading quotes it.
    assert curve["asymptote"] == pytest.approx(
        copula.vote_asymptote(curve["mean_accuracy"], curve["mean_correlation"]), abs=1e-3
    )
    assert 0.0 < curve["mean_correlation"] < 1.0
    assert f"levels off at {curve['asymptote']:.0%}" in curve["reading"]
    assert f"ρ̄={curve['mean_correlation']:.2f}" in curve["reading"]

    assert api("get", f"/runs/{run.pk}").json()["size_curve"] == curve

    page = client.get(f"/t/{team.slug}/runs/{run.pk}/")
    body = page.content.decode()
    assert "Does adding members pay?" in body and 'id="fig-size-curve"' in body and escape(curve["reading"]) in body
    traces = page.context["size_chart"]["data"]

    def y(name_start: str) -> list[float]:
        return list(next(trace for trace in traces if trace["name"].startswith(name_start))["y"])

    assert y("majority vote of the best n, dev") == curve["measured"]["dev"]
    assert y("majority vote of the best n, test") == curve["measured"]["test"]
    assert y("model's prediction") == curve["predicted"]
    assert y("model's limit") == [curve["asymptote"]] * 2
    # The two lines that say whether a vote pays, named so a newcomer reads them: the best member alone
    # and the oracle, any of the best n right, on the reported split.
    assert curve["report_split"] == "test"
    assert y(f"best member alone ({best}), test") == [curve["measured"]["test"][0]] * 2
    test_items = Score.objects.filter(run=run, item__split="test").exclude(entry__name="vote")
    right = {(s.item_id, s.entry.name) for s in test_items.select_related("entry") if s.value == 1.0}
    ids = set(test_items.values_list("item_id", flat=True))
    oracle = [
        pytest.approx(sum(any((i, m) in right for m in curve["members"][:n]) for i in ids) / len(ids))
        for n in curve["sizes"]
    ]
    assert y("oracle (any member right), test") == oracle == curve["oracle"]["test"]
    assert oracle[0] == curve["measured"]["test"][0] and curve["measured"]["test"][-1] <= curve["oracle"]["test"][-1]
    assert "the oracle (any member right)" in body and 'id="size-caption"' in body
    assert "the oracle (any member right: each item counted as soon as one member gets it) would score" in body


def test_the_curve_is_computed_once_per_run_and_then_costs_no_query(owner, team, suite, django_assert_num_queries):
    run = make_run(team, suite)
    # A page shows a finished run's curve without storing it: the run's analyse step stores it.
    shown = csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/?format=json").json()["size_curve"]
    assert Run.objects.get(pk=run.pk).results == {}
    first = analysis.size_curve(Run.objects.select_related("suite").get(pk=run.pk))
    assert first == shown
    Run.objects.filter(pk=run.pk).update(results={"size_curve": first})
    stored = Run.objects.select_related("suite").get(pk=run.pk)
    assert stored.results["size_curve"] == first
    with django_assert_num_queries(0):
        assert queries.size_curve(stored) == first


def test_scores_on_a_scale_get_no_curve(owner, team, suite, api):
    run = make_run(team, suite, value=lambda right: 0.9 if right else 0.3)
    assert api("get", f"/runs/{run.pk}").json()["size_curve"] is None
    page = csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/")
    assert page.context["size_chart"] is None and "Does adding members pay?" not in page.content.decode()


def test_a_run_without_dev_items_fits_the_model_on_test_and_says_so(owner, team, suite):
    run = make_run(team, suite, splits=("test",))
    page = csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/")
    body, curve = page.content.decode(), page.context["size_curve"]
    assert curve["fit_split"] == "test" and list(curve["measured"]) == ["test"]
    assert "this run has no dev items" in body


def test_a_run_still_going_has_no_curve_and_stores_nothing(team, suite, api):
    run = make_run(team, suite, state=State.RUNNING)
    assert api("get", f"/runs/{run.pk}").json()["size_curve"] is None
    assert Run.objects.get(pk=run.pk).results == {}
