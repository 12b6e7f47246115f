"""Self-consistency in the arena: k sampled generations of one member, cached under their seeds, voted."""

from __future__ import annotations

import pytest

from arena.evaluations.cache import generation_key
from arena.evaluations.models import Generation, RunEntry, Score, State
from arena.evaluations.pipeline.generate import decoding_for
from arena.evaluations.services import create_run
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from arena.registry.services import register_blend, register_model
from ensembles.metrics import EXTRACTORS
from ensembles.strategies import Sampling
from tests.factories import SuiteFactory
from tests.helpers import finished, wait_for

K = 4
SEED = 3
TEST_ITEMS = 8


@pytest.fixture
def tiny(team, owner, tiny_variant, settings, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    for seed, name in enumerate(("tiny-a", "tiny-b"), start=1):
        tiny_variant(root / name, seed=seed)
        register_model(team, name=name, kind="hf", config={"path": str(root / name)}, user=owner)
    return Entry.objects.get(team=team, name="tiny-a")


@pytest.mark.django_db
def test_self_consistency_over_two_members_is_a_422_naming_the_members(api, tiny):
    body = {"name": "sc", "strategy": "self_consistency", "params": {"k": 3}, "members": ["tiny-a", "tiny-b"]}
    response = api("post", "/blends", body)
    assert response.status_code == 422
    assert response.json()["detail"] == {"members": ["self_consistency takes at most 1 member"]}
    assert not Entry.objects.filter(kind="blend").exists()


@pytest.mark.django_db
def test_other_strategies_still_need_two_members(api, tiny):
    response = api("post", "/blends", {"name": "v", "strategy": "majority_vote", "members": ["tiny-a"]})
    assert response.status_code == 422
    assert response.json()["detail"] == {"members": ["a blend needs at least 2 members"]}


@pytest.mark.django_db
def test_a_temperature_out_of_range_is_a_422_naming_the_field_and_range(api, tiny):
    body = {"name": "sc", "strategy": "self_consistency", "params": {"temperature": 0}, "members": ["tiny-a"]}
    response = api("post", "/blends", body)
    assert response.status_code == 422
    assert "temperature: must be > 0.0 (got 0)" in str(response.json()["detail"])
    assert not Entry.objects.filter(kind="blend").exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_self_consistency_votes_k_seeded_samples_that_a_second_run_finds_cached(worker, team, owner, tiny):
    suite = SuiteFactory(team=team, size=2 * TEST_ITEMS)
    params = {"k": K, "temperature": 1.0, "top_p": 1.0, "seed": SEED}
    blend = register_blend(team, name="sc", strategy="self_consistency", params=params, members=["tiny-a"])
    run = create_run(team, suite, [blend], user=owner)
    run = wait_for(lambda: finished(run.pk), timeout=240, what="the run to finish")
    assert run.state == State.DONE, run.error
    assert run.provenance["called_models"]["sc"]["model"] == "tiny-a"

    sc = RunEntry.objects.get(run=run, entry=blend)
    assert sc.n == TEST_ITEMS
    assert sc.new_calls == sc.member_calls == TEST_ITEMS * K  # every sample was new and is the blend's cost

    fingerprint = backend_for(tiny).fingerprint()
    extract = EXTRACTORS.get(suite.manifest["answer_extraction"])
    greedy = decoding_for(run)
    disagreed = 0
    sample_tokens = 0
    for score in Score.objects.filter(run=run, entry=blend).select_related("item"):
        prompt = Score.objects.get(run=run, entry=tiny, item=score.item).generation.prompt
        seeds = list(range(SEED, SEED + K))
        assert score.details["seeds"] == seeds
        samples = [
            Generation.objects.get(
                key=generation_key(
                    fingerprint, prompt, Sampling(temperature=1.0, top_p=1.0, seed=seed).applied_to(greedy)
                )
            )
            for seed in seeds
        ]
        assert [generation.params["seed"] for generation in samples] == seeds
        assert {generation.params["temperature"] for generation in samples} == {1.0}
        answers = [extract(generation.text).strip() for generation in samples]
        assert score.details["sample_answers"] == answers
        disagreed += len(set(answers)) > 1
        votes = score.details["votes"]
        assert sum(votes.values()) == sum(1 for a in answers if a)
        if votes:
            assert votes[score.prediction] == max(votes.values())
        assert score.member_calls == K
        assert score.tokens == sum(generation.prompt_tokens + generation.completion_tokens for generation in samples)
        sample_tokens += score.tokens
    # At temperature 1 the random model's seeds disagree on some items: the vote has something to decide.
    assert disagreed > 0
    assert sc.tokens == sample_tokens

    generations = Generation.objects.count()
    again = create_run(team, suite, [blend], user=owner)
    again = wait_for(lambda: finished(again.pk), timeout=240, what="the second run to finish")
    assert again.state == State.DONE, again.error
    assert Generation.objects.count() == generations
    assert sum(RunEntry.objects.filter(run=again).values_list("new_calls", flat=True)) == 0
    first = dict(Score.objects.filter(run=run, entry=blend).values_list("item_id", "prediction"))
    second = dict(Score.objects.filter(run=again, entry=blend).values_list("item_id", "prediction"))
    assert second == first
    assert RunEntry.objects.get(run=again, entry=blend).member_calls == TEST_ITEMS * K
