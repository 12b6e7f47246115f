"""Blends whose strategy calls models itself (fuser, mixture of agents, pipeline) in the arena."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from arena.evaluations.cache import generation_key
from arena.evaluations.models import Generation, RunEntry, Score, State
from arena.evaluations.pipeline.generate import decoding_for
from arena.evaluations.services import create_run
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from arena.registry.services import register_blend, register_model
from arena.teams.models import Team
from tests.factories import SuiteFactory
from tests.helpers import finished, wait_for

SUITE_SIZE = 16  # 8 dev + 8 test; runs report the 8 test items
TEST_ITEMS = SUITE_SIZE // 2


@pytest.fixture
def models_root(tiny_variant, settings, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    for seed, name in enumerate(("tiny-a", "tiny-b", "tiny-fuser"), start=1):
        tiny_variant(root / name, seed=seed)
    settings.ARENA_MODEL_ROOTS = [root]
    return root


@pytest.fixture
def models(team, owner, models_root):
    return {
        name: register_model(team, name=name, kind="hf", config={"path": str(models_root / name)}, user=owner)
        for name in ("tiny-a", "tiny-b", "tiny-fuser")
    }


# --- registration -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_fuser_that_is_not_an_entry_of_the_team_is_a_422_naming_the_field(api, models):
    body = {"name": "fused", "strategy": "gen_fuser", "params": {"fuser": "ghost"}, "members": ["tiny-a", "tiny-b"]}
    response = api("post", "/blends", body)
    assert response.status_code == 422
    assert response.json()["detail"]["params"] == ["fuser: Red team has no entry named 'ghost'"]
    assert not Entry.objects.filter(kind="blend").exists()


@pytest.mark.django_db
def test_a_model_of_another_team_cannot_be_called(team, models, models_root):
    blue = Team.objects.get(slug="blue")
    for name in ("blue-a", "blue-b"):
        register_model(blue, name=name, kind="hf", config={"path": str(models_root / "tiny-a")})
    with pytest.raises(ValidationError) as raised:
        register_blend(
            blue,
            name="chain",
            strategy="pipeline",
            params={"steps": [{"member": "tiny-fuser", "template": "{previous}"}]},
            members=["blue-a", "blue-b"],
        )
    assert raised.value.message_dict == {"params": ["steps.0.member: Blue team has no entry named 'tiny-fuser'"]}
    assert not Entry.objects.filter(kind="blend").exists()


@pytest.mark.django_db
def test_a_blend_cannot_be_the_aggregator(api, models):
    register_blend(
        models["tiny-a"].team, name="vote", strategy="majority_vote", params={}, members=["tiny-a", "tiny-b"]
    )
    body = {
        "name": "moa",
        "strategy": "mixture_of_agents",
        "params": {"aggregator": "vote"},
        "members": ["tiny-a", "tiny-b"],
    }
    response = api("post", "/blends", body)
    assert response.status_code == 422
    assert response.json()["detail"]["params"] == [
        "aggregator: 'vote' is a blend; a strategy can only call model entries"
    ]


@pytest.mark.django_db
def test_a_pipeline_step_or_start_that_is_unknown_is_a_422(api, models):
    steps = [{"member": "tiny-fuser", "template": "Check: {previous}"}, {"member": "nobody", "template": "{previous}"}]
    body = {"name": "chain", "strategy": "pipeline", "params": {"steps": steps}, "members": ["tiny-a", "tiny-b"]}
    response = api("post", "/blends", body)
    assert response.status_code == 422
    assert response.json()["detail"]["params"] == ["steps.1.member: Red team has no entry named 'nobody'"]

    body["params"] = {"start": "tiny-fuser", "steps": steps[:1]}
    response = api("post", "/blends", body)
    assert response.status_code == 422
    assert "start: 'tiny-fuser' is not a member of the blend" in response.json()["detail"]["params"][0]

    body["params"] = {"steps": [{"member": "tiny-fuser", "template": "Check: {answer}"}]}
    response = api("post", "/blends", body)
    assert response.status_code == 422
    assert "steps.0.template: Value error, unknown fields {answer}" in response.json()["detail"]["params"][0]
    assert not Entry.objects.filter(kind="blend").exists()


# --- runs with real workers ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_gen_fuser_blend_costs_its_fusers_calls_and_a_second_combine_makes_none(worker, team, owner, models):
    suite = SuiteFactory(team=team, size=SUITE_SIZE)
    blend = register_blend(
        team, name="fused", strategy="gen_fuser", params={"fuser": "tiny-fuser"}, members=["tiny-a", "tiny-b"]
    )
    members = [models["tiny-a"], models["tiny-b"]]
    run = create_run(team, suite, [*members, blend], user=owner)
    run = wait_for(lambda: finished(run.pk), timeout=240, what="the run to finish")
    assert run.state == State.DONE, run.error

    fused = RunEntry.objects.get(run=run, entry=blend)
    assert fused.n == TEST_ITEMS
    # Per item: both members' stored generations and one fuser call.
    assert fused.member_calls == TEST_ITEMS * (2 + 1)
    assert fused.new_calls == TEST_ITEMS  # the fuser's prompts were new

    fingerprint = backend_for(models["tiny-fuser"]).fingerprint()
    params = decoding_for(run)
    member_scores = Score.objects.filter(run=run, entry__in=members)
    fuser_tokens = 0
    for score in Score.objects.filter(run=run, entry=blend).select_related("item"):
        answers = sorted(member_scores.filter(item=score.item), key=lambda member_score: member_score.entry.name)
        candidates = "\n".join(
            f"{i}. {member_score.prediction}"
            for i, member_score in enumerate((member_score for member_score in answers if member_score.prediction), 1)
        )
        prompt = f"Question: {score.item.data['input']}\nCandidate answers:\n{candidates or '(none)'}\nAnswer:"
        generation = Generation.objects.get(key=generation_key(fingerprint, prompt, params))
        assert score.details["fused_text"] == generation.text
        assert score.member_calls == 3
        fuser_tokens += generation.prompt_tokens + generation.completion_tokens
        assert (
            score.tokens
            == sum(member_score.tokens for member_score in answers)
            + generation.prompt_tokens
            + generation.completion_tokens
        )
        assert score.latency_s >= generation.latency_s
    assert fused.tokens == sum(member_score.tokens for member_score in member_scores) + fuser_tokens

    generations = Generation.objects.count()
    again = create_run(team, suite, [blend], user=owner)
    again = wait_for(lambda: finished(again.pk), timeout=240, what="the second run to finish")
    assert again.state == State.DONE, again.error
    assert Generation.objects.count() == generations
    assert sum(RunEntry.objects.filter(run=again).values_list("new_calls", flat=True)) == 0
    first = dict(Score.objects.filter(run=run, entry=blend).values_list("item_id", "prediction"))
    second = dict(Score.objects.filter(run=again, entry=blend).values_list("item_id", "prediction"))
    assert second == first
    assert RunEntry.objects.get(run=again, entry=blend).member_calls == fused.member_calls


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_pipeline_whose_step_cannot_load_fails_the_blend_with_the_reason(worker, team, owner, models, models_root):
    blend = register_blend(
        team,
        name="chain",
        strategy="pipeline",
        params={"steps": [{"member": "tiny-fuser", "template": "Question: What is {previous} + 1 ?\nAnswer:"}]},
        members=["tiny-a", "tiny-b"],
    )
    # The step's weights vanish after registration.
    for weights in (models_root / "tiny-fuser").glob("*.safetensors"):
        weights.unlink()
    suite = SuiteFactory(team=team, size=SUITE_SIZE)
    run = create_run(team, suite, [models["tiny-a"], models["tiny-b"], blend], user=owner)
    run = wait_for(lambda: finished(run.pk), timeout=240, what="the run to finish")

    assert run.state == State.PARTIAL  # tiny-a and tiny-b finished
    chain = RunEntry.objects.get(run=run, entry=blend)
    assert chain.state == State.FAILED
    assert "has no *.safetensors weights" in chain.error
    assert not Score.objects.filter(run=run, entry=blend).exists()
    assert RunEntry.objects.get(run=run, entry=models["tiny-a"]).state == State.DONE
