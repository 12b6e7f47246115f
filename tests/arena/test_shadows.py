"""Shadow comparison: a sampled share of an entry's live /v1 chat requests is also answered by its shadow
on a real worker, and the arena shows how often the two agree, what each cost and what a judge preferred."""

from __future__ import annotations

import json

import pytest

from arena.core.states import State
from arena.registry.models import Kind
from arena.registry.services import register_blend, register_model
from arena.serving.models import Preference, ShadowConfig, ShadowSample
from arena.teams.models import ApiToken, Role, Team
from ensembles.answers import vote_key
from ensembles.metrics import EXTRACTORS
from tests.arena.routes import client_for, post_with_token
from tests.factories import EntryFactory
from tests.helpers import row_counts, wait_for

QUESTION = {"role": "user", "content": "What is 1 + 2 ?"}
# Always "[[B]]": the second answer shown wins, whichever it is, so the two orders disagree (a tie).
POSITION_BIASED = (
    b'{"choices": [{"message": {"content": "[[B]]"}}], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}'
)


def chat(client, token: str, model: str, **extra):
    body = {"model": model, "messages": [QUESTION], "max_tokens": 4, **extra}
    return client.post(
        "/v1/chat/completions", json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def what_the_client_reads(response) -> dict:
    """The answer without what differs on every call (its id, its time, its measured latency)."""
    data = response.json()
    return {**{k: v for k, v in data.items() if k not in ("id", "created", "arena")}, "blend": data["arena"]["blend"]}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_sampled_request_is_answered_by_the_shadow_on_a_worker_compared_and_judged_in_both_orders(
    worker, client, api, team, viewer, teammate, settings, tiny_variant, tmp_path, serve
):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    for i in range(4):
        register_model(team, name=f"m{i}", kind="hf", config={"path": str(tiny_variant(root / f"m{i}", seed=i))})
    register_blend(team, name="vote", strategy="majority_vote", params={}, members=["m1", "m2", "m3"])
    register_blend(team, name="learned", strategy="stacking", params={}, members=["m1", "m2"])
    judge_server = serve(body=POSITION_BIASED)
    EntryFactory(team=team, name="judge", kind=Kind.OPENAI, config={"base_url": f"{judge_server.url}/v1", "model": "j"})
    token = ApiToken.issue(team, "serve", role=Role.VIEWER)[1]

    chat(client, token, "m0")  # the entry's answer is cached from here on, with a shadow or without
    without = what_the_client_reads(chat(client, token, "m0"))
    assert not ShadowSample.objects.exists()

    response = api("put", "/shadows/m0", {"shadow": "vote", "rate": 1.0, "judge": "judge"})
    assert response.status_code == 200, response.content
    answered = chat(client, token, "m0")
    assert answered.status_code == 200
    assert what_the_client_reads(answered) == without

    sample = wait_for(
        lambda: ShadowSample.objects.filter(entry__name="m0", state__in=[State.DONE, State.FAILED]).first(),
        what="the shadow's answer",
    )
    assert sample.state == State.DONE, sample.error
    direct = chat(client, token, "vote").json()  # the shadow called as a client would: its cached answer
    first_line = EXTRACTORS.get("first_line")
    assert sample.entry_answer == answered.json()["choices"][0]["message"]["content"]
    assert sample.shadow_answer == direct["choices"][0]["message"]["content"]
    assert sample.agree == (vote_key(first_line(sample.entry_answer)) == vote_key(first_line(sample.shadow_answer)))
    assert sample.prompt == QUESTION["content"] and len(sample.prompt_digest) == 64
    assert sample.entry_tokens == answered.json()["usage"]["total_tokens"]
    assert sample.shadow_tokens == direct["usage"]["total_tokens"]
    assert (sample.entry_calls, sample.shadow_calls) == (1, 3)
    # The judge saw the pair twice, each answer first once, and said "B" both times: position bias, a tie.
    assert sample.entry_answer != sample.shadow_answer
    assert len(judge_server.received) == 2
    assert (sample.verdict_forward, sample.verdict_swapped, sample.preferred) == ("B", "B", Preference.TIE)

    shown = api("get", "/shadows/m0", auth=token).json()
    assert (shown["shadow"], shown["rate"], shown["judge"]) == ("vote", 1.0, "judge")
    [comparison] = shown["comparisons"]
    assert comparison["samples"] == 1 and comparison["current"]
    assert comparison["agreement"] == (1.0 if sample.agree else 0.0)
    assert comparison["cost"]["shadow"]["calls"] == 3 and comparison["cost"]["entry"]["calls"] == 1
    assert comparison["judge"] == {"judged": 1, "entry_wins": 0, "shadow_wins": 0, "ties": 1, "shadow_preferred": 0.5}
    assert shown["samples"][0]["shadow_answer"] == sample.shadow_answer

    entry_page = f"/t/{team.slug}/entries/{sample.entry_id}/"
    page = client_for(viewer).get(entry_page)
    assert page.status_code == 200
    assert b'id="shadow-comparisons"' in page.content and b'id="shadow-form"' not in page.content
    assert b'id="shadow-form"' in client_for(teammate).get(entry_page).content

    # A shadow that cannot answer (a learned blend never fitted) fails its sample with the reason; the
    # client is answered as before.
    assert api("put", "/shadows/m0", {"shadow": "learned", "rate": 1.0}).status_code == 200
    assert what_the_client_reads(chat(client, token, "m0")) == without
    failed = wait_for(
        lambda: ShadowSample.objects.filter(shadow__name="learned", state__in=[State.DONE, State.FAILED]).first(),
        what="the failed sample",
    )
    assert failed.state == State.FAILED and "dev split" in failed.error
    assert [(c["shadow"], c["failed"]) for c in api("get", "/shadows/m0").json()["comparisons"]] == [
        ("learned", 1),
        ("vote", 0),
    ]

    # At rate 0 no request is sampled: nothing stored, nothing sent.
    assert api("put", "/shadows/m0", {"shadow": "vote", "rate": 0.0}).status_code == 200
    for _ in range(3):
        assert chat(client, token, "m0").status_code == 200
    assert ShadowSample.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"shadow": "red-model-a", "rate": 0.5}, "shadow", "cannot shadow itself"),
        ({"shadow": "blue-model", "rate": 0.5}, "shadow", "is not an entry of Red team"),
        ({"shadow": "red-merge", "rate": 0.5}, "shadow", "served at /v1"),
        ({"shadow": "red-blend", "rate": 0.5, "judge": "red-blend"}, "judge", "single models"),
        ({"shadow": "red-blend", "rate": 1.5}, "rate", "less than or equal to 1"),
        ({"shadow": "red-blend", "rate": -0.1}, "rate", "greater than or equal to 0"),
        ({"shadow": "", "rate": 0.5}, "shadow", "at least 1 character"),
    ],
)
def test_a_refused_shadow_is_a_422_naming_the_field_and_stores_nothing(api, red, body, field, message):
    EntryFactory(team=Team.objects.get(slug="blue"), name="blue-model", kind=Kind.OPENAI)
    response = api("put", "/shadows/red-model-a", body)
    assert response.status_code == 422
    assert field in response.content.decode() and message in response.content.decode()
    assert not ShadowConfig.objects.exists()


@pytest.mark.django_db
def test_the_entry_page_form_sets_and_stops_a_shadow_and_refuses_bad_input_with_a_400(red, teammate, viewer):
    entry = red.team.entries.get(name="red-model-a")
    url = f"/t/{red.team.slug}/entries/{entry.pk}/shadow/"
    member = client_for(teammate)
    before = row_counts()
    for data, message in (
        ({"shadow": "red-blend", "rate": "half"}, "rate: a share of requests between 0 and 1"),
        ({"shadow": "red-blend", "rate": "nan"}, "rate: a share of requests between 0 and 1"),
        ({"shadow": "red-model-a", "rate": "0.5"}, "shadow: an entry cannot shadow itself"),
    ):
        refused = post_with_token(member, url, data)
        assert refused.status_code == 400 and message in refused.content.decode()
    assert post_with_token(client_for(viewer), url, {"shadow": "red-blend", "rate": "0.5"}).status_code == 403
    assert row_counts() == before

    done = post_with_token(member, url, {"shadow": "red-blend", "rate": "0.25", "judge": "red-model-b"})
    assert done.status_code == 302 and done["Location"] == f"/t/{red.team.slug}/entries/{entry.pk}/"
    config = ShadowConfig.objects.get(entry=entry)
    assert (config.shadow.name, config.rate, config.judge.name, config.updated_by) == (
        "red-blend",
        0.25,
        "red-model-b",
        teammate,
    )
    assert b"answers 25% of the chat requests" in member.get(done["Location"]).content
    assert post_with_token(member, url, {"action": "stop"}).status_code == 302
    assert not ShadowConfig.objects.exists()


@pytest.mark.django_db
def test_a_viewer_reads_the_comparison_but_cannot_set_it_and_another_team_gets_404(api, red):
    viewer = ApiToken.issue(red.team, "viewer", role=Role.VIEWER)[1]
    blue = ApiToken.issue(Team.objects.get(slug="blue"), "blue", role=Role.OWNER)[1]
    body = {"shadow": "red-blend", "rate": 0.5}
    assert api("put", "/shadows/red-model-a", body, auth=viewer).status_code == 403
    assert api("delete", "/shadows/red-model-a", auth=viewer).status_code == 403
    shown = api("get", "/shadows/red-model-a", auth=viewer)
    assert shown.status_code == 200
    assert shown.json() == {
        "entry": "red-model-a",
        "shadow": None,
        "rate": 0.0,
        "judge": None,
        "comparisons": [],
        "samples": [],
    }
    for method, sent in (("get", None), ("put", body), ("delete", None)):
        assert api(method, "/shadows/red-model-a", sent, auth=blue).status_code == 404
    assert not ShadowConfig.objects.exists()
    assert api("put", "/shadows/red-model-a", body).json()["shadow"] == "red-blend"
    assert api("get", "/shadows/red-model-a", auth=viewer).json()["rate"] == 0.5
