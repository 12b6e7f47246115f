"""Multiple choice by log-likelihood in a real run: options scored, cached, and pooled by a blend."""

from __future__ import annotations

import math

import pytest

from arena.evaluations.models import Generation, RunEntry, Score, State
from arena.evaluations.services import create_run
from arena.registry.services import register_blend, register_model
from ensembles.suites import Suite as LibSuite
from ensembles.suites import get_builtin
from tests.factories import SuiteFactory
from tests.helpers import finished, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def mc_suite(scoring: str) -> LibSuite:
    base = get_builtin("mc_knowledge", size=12)
    manifest = base.manifest.model_copy(update={"scoring": scoring, "name": f"mc-{scoring.replace('_', '-')}"})
    return LibSuite(manifest, base.items)


@pytest.fixture
def members(team, owner, tiny_variant, settings, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    return [
        register_model(
            team,
            name=f"tiny-{seed}",
            kind="hf",
            config={"path": str(tiny_variant(root / f"tiny-{seed}", seed=seed))},
            user=owner,
        )
        for seed in (1, 2)
    ]


def test_options_are_scored_by_log_likelihood_and_a_pool_blend_uses_them(worker, team, owner, members):
    suite = SuiteFactory(team=team, library=mc_suite("loglikelihood_norm"))
    pool = register_blend(
        team, name="pool", strategy="logprob_pool", params={}, members=[member.name for member in members]
    )
    started = create_run(team, suite, [*members, pool], user=owner)
    run = wait_for(lambda: finished(started.pk), what="the run")
    assert run.state == State.DONE, run.error

    lib = mc_suite("loglikelihood_norm")
    by_key = {item.id: item for item in lib.items}
    for score in Score.objects.filter(run=run, entry__in=members).select_related("item", "generation"):
        options = score.details["option_logprobs"]
        item = by_key[score.item.key]
        assert list(options) == list("ABCDEFGHIJ"[: len(item.choices)])
        assert score.prediction == max(options, key=options.get)
        assert score.value == float(score.prediction == "ABCDEFGHIJ"[item.gold])
        assert score.details["scoring"] == "loglikelihood_norm"
        assert math.exp(score.details["mean_logprob"]) <= 1.0
        assert score.generation.params["kind"] == "loglikelihood"
        assert len(score.generation.token_logprobs) == len(item.choices)

    # The pool blend read its members' option log-likelihoods rather than falling back to a vote.
    pooled = Score.objects.filter(run=run, entry=pool)
    assert pooled.exists()
    assert not any("fallback" in score.details for score in pooled)
    assert RunEntry.objects.get(run=run, entry=pool).state == State.DONE

    # A second run of the same members on the same suite computes nothing again.
    before = Generation.objects.count()
    second = create_run(team, suite, members, user=owner)
    again = wait_for(lambda: finished(second.pk), what="the second run")
    assert again.state == State.DONE
    assert Generation.objects.count() == before
    assert sum(RunEntry.objects.filter(run=again).values_list("new_calls", flat=True)) == 0
