"""A real BIG-bench task uploaded as a new user would: prompted and scored as BIG-bench means it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from arena.benchmarks.models import Suite
from arena.benchmarks.services import library_suite
from arena.evaluations.models import Score, State
from arena.evaluations.services import create_run
from arena.registry.services import register_model
from tests.helpers import csrf_client, finished, wait_for

CHECKMATE = Path(__file__).resolve().parent.parent / "fixtures" / "bigbench" / "checkmate_in_one.json"


def upload(api, **options):
    return api("post", "/suites", {"format": "bigbench", "files": {"task": CHECKMATE.read_text()}, **options})


@pytest.mark.django_db
def test_a_bigbench_upload_is_log_likelihood_multiple_choice_with_the_tasks_own_prompt(api, team):
    response = upload(api)
    assert response.status_code == 201, response.content
    assert (response.json()["name"], response.json()["task_type"]) == ("checkmate_in_one", "multiple_choice")
    suite = library_suite(Suite.objects.get(pk=response.json()["id"]))
    task = json.loads(CHECKMATE.read_text())
    assert suite.manifest.scoring == "loglikelihood"
    # append_choices_to_input is false: task_prefix, example_input_prefix, the input, example_output_prefix.
    expected = [
        task["task_prefix"] + task["example_input_prefix"] + example["input"] + task["example_output_prefix"]
        for example in task["examples"]
    ]
    assert [suite.render_prompt(item) for item in suite.items] == expected
    assert [item.option_scores for item in suite.items] == [
        [float(score) for score in example["target_scores"].values()] for example in task["examples"]
    ]


@pytest.mark.django_db
def test_bigbench_scoring_is_chosen_at_upload_and_a_bad_choice_is_a_clear_422(api, team):
    by_letter = upload(api, scoring="generate")
    assert by_letter.status_code == 422
    assert "39 options; answered by generating a letter at most 10" in json.dumps(by_letter.json())
    assert upload(api, scoring="vibes").status_code == 422
    assert not Suite.objects.filter(team=team).exists()
    normalized = upload(api, scoring="loglikelihood_norm")
    assert normalized.status_code == 201
    assert Suite.objects.get(pk=normalized.json()["id"]).manifest["scoring"] == "loglikelihood_norm"


@pytest.mark.django_db
def test_the_upload_page_offers_the_scoring_and_uses_it(teammate, team):
    task = {
        "name": "sums",
        "examples": [{"input": f"{i}+1=", "target_scores": {str(i + 1): 1, str(i + 2): 0}} for i in range(4)],
    }
    client = csrf_client(teammate)
    page = client.get("/t/red/suites/")
    assert b'name="scoring"' in page.content
    response = client.post(
        "/t/red/suites/upload/",
        {
            "format": "bigbench",
            "bigbench-task": SimpleUploadedFile("task.json", json.dumps(task).encode()),
            "scoring": "generate",
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
        follow=True,
    )
    assert response.status_code == 200
    suite = Suite.objects.get(team=team, name="sums")
    assert suite.manifest["scoring"] == "generate"
    assert library_suite(suite).render_prompt(library_suite(suite).items[0]) == "\nQ: 0+1=\nA. 1\nB. 2\nA: "


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_imported_bigbench_task_scores_every_option_by_log_likelihood_in_a_run(
    worker, api, team, owner, tiny_variant, settings, tmp_path
):
    settings.ARENA_MODEL_ROOTS = [tmp_path]
    model = register_model(
        team, name="tiny", kind="hf", config={"path": str(tiny_variant(tmp_path / "tiny", seed=1))}, user=owner
    )
    suite_row = Suite.objects.get(pk=upload(api).json()["id"])
    started = create_run(team, suite_row, [model], user=owner)
    run = wait_for(lambda: finished(started.pk), what="the run")
    assert run.state == State.DONE, run.error
    items = {item.id: item for item in library_suite(suite_row).items}
    scores = list(Score.objects.filter(run=run, entry=model).select_related("item", "generation"))
    assert scores
    for score in scores:
        item = items[score.item.key]
        options = score.details["option_logprobs"]
        assert score.details["scoring"] == "loglikelihood"
        assert len(options) == len(item.choices or []) == len(score.generation.token_logprobs)
        assert score.prediction == max(options, key=options.get)
        # The credit is the chosen option's target score (BIG-bench's multiple_choice_grade).
        assert score.value == (item.option_scores or [])[list(options).index(score.prediction)]
