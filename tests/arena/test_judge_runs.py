"""Judge suites in runs: answers generated, compared pairwise in both orders, rated, cached."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from arena.evaluations.models import Comparison, Generation, Run, RunEntry, Score, State
from arena.evaluations.pipeline.score import _judge_scores
from arena.evaluations.services import create_run
from arena.registry.services import register_blend, register_model
from tests.arena.helpers import QUESTIONS, judge_suite
from tests.factories import RunFactory, SuiteFactory
from tests.helpers import finished, wait_for


@pytest.fixture
def models(team, owner, tiny_variant, settings, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    return {
        name: register_model(
            team,
            name=name,
            kind="hf",
            config={"path": str(tiny_variant(root / name, seed=seed))},
            user=owner,
        )
        for seed, name in enumerate(("alpha", "beta", "gamma", "judge"), start=1)
    }


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_judge_run_compares_every_pair_in_both_orders_and_judging_again_costs_nothing(worker, team, owner, models):
    suite = SuiteFactory(team=team, library=judge_suite())
    contestants = [models["alpha"], models["beta"], models["gamma"]]
    started = create_run(team, suite, contestants, user=owner, judge=models["judge"])
    run = wait_for(lambda: finished(started.pk), what="the judge run")
    assert run.state == State.DONE, run.error
    assert run.judge_state == State.DONE

    # 4 items x 3 pairs, each shown in both orders: 24 judge prompts.
    comparisons = Comparison.objects.filter(run=run)
    assert comparisons.count() == len(QUESTIONS) * 3
    assert all(comparison.forward_generation_id and comparison.swapped_generation_id for comparison in comparisons)
    assert all(comparison.forward_generation_id != comparison.swapped_generation_id for comparison in comparisons)
    judge_info = run.results["judge"]
    assert judge_info["entry"] == "judge"
    assert judge_info["calls"] == len(QUESTIONS) * 3 * 2
    ratings = run.results["ratings"]
    readable = comparisons.exclude(outcome="").count()
    assert ratings["battles"] == readable and ratings["unreadable"] == comparisons.count() - readable
    for entry in contestants:
        run_entry = RunEntry.objects.get(run=run, entry=entry)
        assert run_entry.state == State.DONE and run_entry.n == len(QUESTIONS)
        values = list(Score.objects.filter(run=run, entry=entry).values_list("value", flat=True))
        assert all(0.0 <= v <= 1.0 for v in values)
    # The judge itself is not a contestant.
    assert not RunEntry.objects.filter(run=run, entry=models["judge"]).exists()

    before = Generation.objects.count()
    second = create_run(team, suite, contestants, user=owner, judge=models["judge"])
    again = wait_for(lambda: finished(second.pk), what="the second judge run")
    assert again.state == State.DONE
    assert Generation.objects.count() == before
    assert again.results["judge"]["new_calls"] == 0


@pytest.mark.django_db
def test_outcomes_become_per_item_scores_and_bradley_terry_ratings(team, owner, models):
    suite = SuiteFactory(team=team, library=judge_suite())
    a, b, c = models["alpha"], models["beta"], models["gamma"]
    run = RunFactory(suite=suite, state=State.QUEUED, judge=models["judge"])
    items = list(suite.items.order_by("position"))
    for item in items:
        for entry in (a, b, c):
            Score.objects.create(run=run, entry=entry, item=item, prediction="x", value=0.0)
        # alpha beats beta, beta beats gamma, alpha and gamma tie, on every item
        Comparison.objects.create(run=run, item=item, first=a, second=b, forward="A", swapped="B", outcome="first")
        Comparison.objects.create(run=run, item=item, first=b, second=c, forward="A", swapped="B", outcome="first")
        Comparison.objects.create(run=run, item=item, first=a, second=c, forward="A", swapped="A", outcome="tie")
    ratings = _judge_scores(run, [a, b, c])
    values = {
        entry.name: set(Score.objects.filter(run=run, entry=entry).values_list("value", flat=True))
        for entry in (a, b, c)
    }
    assert values == {"alpha": {0.75}, "beta": {0.5}, "gamma": {0.25}}
    order = sorted(ratings["entries"], key=lambda n: -ratings["entries"][n]["rating"])
    assert order == ["alpha", "beta", "gamma"]
    assert ratings["battles"] == 3 * len(items) and ratings["unreadable"] == 0


@pytest.mark.django_db
def test_a_judge_suite_needs_a_judge_two_single_models_and_no_blends(team, owner, models):
    suite = SuiteFactory(team=team, library=judge_suite())
    a, b = models["alpha"], models["beta"]
    with pytest.raises(ValidationError, match="needs a judge"):
        create_run(team, suite, [a, b])
    with pytest.raises(ValidationError, match="at least two entries"):
        create_run(team, suite, [a], judge=models["judge"])
    vote = register_blend(team, name="vote", strategy="majority_vote", params={}, members=["alpha", "beta"])
    with pytest.raises(ValidationError, match="blends cannot take part yet: vote"):
        create_run(team, suite, [a, vote], judge=models["judge"])
    with pytest.raises(ValidationError, match="single models"):
        create_run(team, suite, [a, b], judge=vote)
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_a_judge_is_refused_on_a_metric_suite(api, team, models):
    suite = SuiteFactory(team=team, size=4)
    with pytest.raises(ValidationError, match="only judge suites take a judge"):
        create_run(team, suite, [models["alpha"]], judge=models["judge"])
    response = api("post", "/runs", {"suite": "arithmetic", "entries": ["alpha"], "judge": "nobody"})
    assert response.status_code == 422
    assert "unknown entry 'nobody'" in response.json()["detail"]["judge"][0]
