"""The OpenAI-compatible endpoint, called over real HTTP by the arena's own `openai` backend."""

from __future__ import annotations

import json
import urllib.request

import pytest

from arena.evaluations.models import Generation
from arena.registry.services import register_blend, register_model
from arena.teams.models import ApiToken
from ensembles.backends import BackendError, BackendOptions, DecodingParams, make_backend
from tests.conftest import make_tiny_variant

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def served(team, settings, tiny_llama_dir, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    paths = [make_tiny_variant(tiny_llama_dir, root / f"m{i}", seed=i) for i in range(3)]
    for i, path in enumerate(paths):
        register_model(team, name=f"m{i}", kind="hf", config={"path": str(path)})
    register_blend(team, name="vote", strategy="majority_vote", params={}, members=["m0", "m1", "m2"])
    register_blend(team, name="learned", strategy="stacking", params={}, members=["m0", "m1"])
    register_blend(team, name="fused", strategy="gen_fuser", params={"fuser": "m2"}, members=["m0", "m1"])
    return ApiToken.issue(team, "serve")[1], paths


def call(url: str, body: dict | None, token: str | None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_single_model_answers_through_the_openai_backend_as_it_does_locally(live_server, served):
    token, paths = served
    remote = make_backend("openai", {"base_url": f"{live_server.url}/v1", "model": "m0", "api_key": token})
    params = DecodingParams(max_new_tokens=5, stop=())
    [over_http] = remote.generate(["What is 1 + 2 ?"], params)
    [local] = make_backend("hf", {"path": str(paths[0])}, options=BackendOptions(device="cpu")).generate(
        ["What is 1 + 2 ?"], params
    )
    assert over_http.text == local.text
    assert len(over_http.token_logprobs) == local.completion_tokens
    assert over_http.prompt_tokens == local.prompt_tokens


def test_a_repeated_request_is_served_from_the_generation_cache(live_server, served):
    token, _ = served
    body = {"model": "m1", "messages": [{"role": "user", "content": "What is 3 ?"}], "max_tokens": 4}
    first = call(f"{live_server.url}/v1/chat/completions", body, token)
    count = Generation.objects.count()
    second = call(f"{live_server.url}/v1/chat/completions", body, token)
    assert first[1]["choices"][0]["message"] == second[1]["choices"][0]["message"]
    assert Generation.objects.count() == count == 1


def test_a_blend_is_served_like_one_model_and_says_how_it_decided(live_server, served):
    token, _ = served
    status, body = call(
        f"{live_server.url}/v1/chat/completions",
        {"model": "vote", "messages": [{"role": "user", "content": "What is 7 - 5 ?"}], "max_tokens": 4},
        token,
    )
    assert status == 200
    assert body["arena"]["blend"]["members"] == ["m0", "m1", "m2"]
    assert sum(body["arena"]["blend"]["votes"].values()) == 3
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_a_fuser_blend_calls_its_fuser_model_and_caches_the_call(live_server, served):
    token, _ = served
    body = {"model": "fused", "messages": [{"role": "user", "content": "What is 2 + 2 ?"}], "max_tokens": 4}
    status, first = call(f"{live_server.url}/v1/chat/completions", body, token)
    assert status == 200, first
    assert first["arena"]["blend"]["strategy"] == "gen_fuser"
    count = Generation.objects.count()
    assert count == 3  # two members and the fuser
    status, second = call(f"{live_server.url}/v1/chat/completions", body, token)
    assert second["choices"][0]["message"] == first["choices"][0]["message"]
    assert Generation.objects.count() == count


def test_models_lists_the_teams_entries_only(live_server, served):
    token, _ = served
    status, body = call(f"{live_server.url}/v1/models", None, token)
    assert status == 200
    assert {m["id"] for m in body["data"]} == {"m0", "m1", "m2", "vote", "learned", "fused"}


def test_bad_requests_get_openai_style_errors(live_server, served, team):
    token, _ = served
    url = f"{live_server.url}/v1/chat/completions"
    assert call(url, {"model": "m0", "messages": [{"role": "user", "content": "x"}]}, None)[0] == 401
    assert call(url, {"model": "m0", "messages": [{"role": "user", "content": "x"}]}, "arena_wrong")[0] == 401
    status, body = call(url, {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, token)
    assert status == 404 and body["error"]["param"] == "model"
    status, body = call(url, {"model": "m0", "messages": []}, token)
    assert status == 400 and "messages" in body["error"]["message"]
    status, body = call(url, {"model": "learned", "messages": [{"role": "user", "content": "x"}]}, token)
    assert status == 422 and "dev split" in body["error"]["message"]


def test_another_teams_token_cannot_reach_these_models(live_server, served):
    from arena.teams.models import Team

    other = ApiToken.issue(Team.objects.get(slug="blue"), "blue")[1]
    remote = make_backend(
        "openai", {"base_url": f"{live_server.url}/v1", "model": "m0", "api_key": other, "max_retries": 0}
    )
    with pytest.raises(BackendError, match="HTTP 404"):
        remote.generate(["hi"], DecodingParams(max_new_tokens=2))
