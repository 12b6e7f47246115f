"""Registration that guides: each kind's help, the local models found to pick from, and a probe of the model
(its config or GGUF header, an endpoint's one-token answer) before anything is stored, by form and API alike."""

from __future__ import annotations

import json
import shutil

import pytest

from arena.registry.backends import built_dir
from arena.registry.models import Entry
from arena.teams.models import Team
from tests.helpers import csrf_client, post_form

pytestmark = pytest.mark.django_db

SMOLLM = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENCODER = "all-MiniLM-L6-v2"


@pytest.fixture
def roots(settings, tiny_llama_dir, tmp_path):
    """The shipped models, the session's tiny llama and this test's own folder are the allowed roots."""
    settings.ARENA_MODEL_ROOTS = [settings.MODELS_DIR, tiny_llama_dir.parent, tmp_path]
    settings.ARENA_BUILT_MODELS_DIR = tmp_path / "built"
    return tmp_path


def _shown_after(client, response) -> str:
    """The dashboard a form's post redirects to, as text."""
    assert response.status_code == 302
    return client.get(response["Location"]).content.decode()


def test_the_form_and_the_api_register_a_folder_model_and_the_shipped_gguf(
    owner, team, api, settings, roots, tiny_llama_dir
):
    client = csrf_client(owner)
    page = post_form(client, f"/t/{team.slug}/entries/", {"name": "tiny", "kind": "hf", "path": str(tiny_llama_dir)})
    tiny = Entry.objects.get(team=team, name="tiny")
    assert page.status_code == 302 and page["Location"] == f"/t/{team.slug}/entries/{tiny.pk}/"
    assert tiny.config["path"] == str(tiny_llama_dir)
    gguf = str(settings.MODELS_DIR / SMOLLM)
    response = api("post", "/entries", {"name": "smol", "kind": "gguf", "config": {"path": gguf}})
    assert response.status_code == 201, response.content
    assert response.json()["config"]["path"] == gguf
    response = api("post", "/entries", {"name": "tiny-api", "kind": "hf", "config": {"path": str(tiny_llama_dir)}})
    assert response.status_code == 201, response.content


def test_an_encoder_is_a_422_saying_it_cannot_generate_and_the_form_says_the_same(owner, team, api, settings, roots):
    encoder = str(settings.MODELS_DIR / ENCODER)
    response = api("post", "/entries", {"name": "minilm", "kind": "hf", "config": {"path": encoder}})
    assert response.status_code == 422
    said = response.json()["detail"]["config"][0]
    assert "is an encoder" in said and "cannot generate" in said
    client = csrf_client(owner)
    page = _shown_after(
        client, post_form(client, f"/t/{team.slug}/entries/", {"name": "minilm", "kind": "hf", "path": encoder})
    )
    assert "is an encoder" in page and "cannot generate" in page
    assert not Entry.objects.exists()


def test_a_truncated_gguf_and_a_folder_with_a_corrupt_config_are_422s_that_store_nothing(
    api, settings, roots, tiny_llama_dir
):
    truncated = roots / "cut.gguf"
    with (settings.MODELS_DIR / SMOLLM).open("rb") as whole:
        truncated.write_bytes(whole.read(64 << 10))  # the header is cut off within its key-value table
    response = api("post", "/entries", {"name": "cut", "kind": "gguf", "config": {"path": str(truncated)}})
    assert response.status_code == 422
    assert "truncated" in response.json()["detail"]["config"][0]

    corrupt = shutil.copytree(tiny_llama_dir, roots / "corrupt")
    (corrupt / "config.json").write_text('{"model_type": "llama", ')
    response = api("post", "/entries", {"name": "corrupt", "kind": "hf", "config": {"path": str(corrupt)}})
    assert response.status_code == 422
    assert "config.json cannot be read" in response.json()["detail"]["config"][0]

    weights = next(corrupt.glob("*.safetensors"))
    shutil.copy(tiny_llama_dir / "config.json", corrupt / "config.json")
    weights.write_bytes(weights.read_bytes()[:-100])
    response = api("post", "/entries", {"name": "corrupt", "kind": "hf", "config": {"path": str(corrupt)}})
    assert response.status_code == 422
    assert f"{weights.name} is truncated or corrupt" in response.json()["detail"]["config"][0]
    assert not Entry.objects.exists()


def test_an_endpoint_is_stored_once_it_answers_a_one_token_test_call(api, serve):
    endpoint = serve()
    body = {"name": "remote", "kind": "openai", "config": {"base_url": f"{endpoint.url}/v1", "model": "m"}}
    response = api("post", "/entries", body)
    assert response.status_code == 201, response.content
    assert endpoint.paths == ["/v1/chat/completions"]
    assert json.loads(endpoint.bodies[0])["max_tokens"] == 1
    assert Entry.objects.filter(name="remote").exists()


def test_an_endpoint_that_fails_its_test_call_is_a_422_naming_why(owner, team, api, serve):
    broken = serve(status=500, body=b'{"error": "out of memory"}')
    body = {"name": "remote", "kind": "openai", "config": {"base_url": f"{broken.url}/v1", "model": "m"}}
    response = api("post", "/entries", body)
    assert response.status_code == 422
    said = response.json()["detail"]["config"][0]
    assert "one-token test call failed" in said and "HTTP 500" in said and "out of memory" in said
    assert len(broken.paths) == 1  # asked once: a registration does not wait through a run's retries

    unreachable = {"base_url": "http://127.0.0.1:9/v1", "model": "m"}
    response = api("post", "/entries", {**body, "config": unreachable})
    assert response.status_code == 422
    assert "unreachable" in response.json()["detail"]["config"][0]
    client = csrf_client(owner)
    sent = {"name": "remote", "kind": "openai", "config": '{"base_url": "http://127.0.0.1:9/v1", "model": "m"}'}
    assert "unreachable" in _shown_after(client, post_form(client, f"/t/{team.slug}/entries/", sent))
    assert not Entry.objects.exists()


def test_the_dashboard_guides_each_kind_and_offers_the_models_found_in_the_allowed_folders(
    owner, team, settings, roots, tiny_llama_dir
):
    # A model the arena built for this team, and one it built for another team inside a shared root.
    for owner_team in (team, Team.objects.get(slug="blue")):
        shutil.copytree(tiny_llama_dir, built_dir(owner_team.pk) / "fine-tuned")
    page = csrf_client(owner).get(f"/t/{team.slug}/").content.decode()
    for kind in ("hf", "gguf", "openai", "merge"):
        assert f'data-kind="{kind}"' in page
    assert "one request for one token" in page and "&quot;base_url&quot;" in page
    assert f'<option value="{settings.MODELS_DIR / SMOLLM}" label="gguf · {SMOLLM}">' in page
    assert f'<option value="{tiny_llama_dir}" label="hf · {tiny_llama_dir.name}">' in page
    assert f'<option value="{built_dir(team.pk) / "fine-tuned"}"' in page
    blue = Team.objects.get(slug="blue")
    assert str(built_dir(blue.pk)) not in page


def test_a_path_picked_for_an_endpoint_is_refused_naming_the_field(owner, team, roots, tiny_llama_dir):
    client = csrf_client(owner)
    sent = {"name": "x", "kind": "openai", "path": str(tiny_llama_dir), "config": "{}"}
    assert "path: a path is for folder and GGUF models" in _shown_after(
        client, post_form(client, f"/t/{team.slug}/entries/", sent)
    )
    assert not Entry.objects.exists()
