"""The OpenAI-compatible endpoint, called over real HTTP by the arena's own `openai` backend and by
the official `openai` SDK, sync and async, as clients use it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from transformers import AutoTokenizer

from arena.evaluations.models import Generation, Score, State
from arena.evaluations.services import create_run
from arena.registry.services import register_blend, register_model
from arena.teams.models import ApiToken
from ensembles.backends import BackendError, BackendOptions, DecodingParams, make_backend, transcript
from ensembles.suites import Suite as LibSuite
from ensembles.suites import get_builtin
from tests.factories import SuiteFactory
from tests.helpers import finished, json_request, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def served(team, settings, tiny_variant, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    paths = [tiny_variant(root / f"m{i}", seed=i) for i in range(3)]
    for i, path in enumerate(paths):
        register_model(team, name=f"m{i}", kind="hf", config={"path": str(path), "prices": PRICES})
    chat = tiny_variant(root / "chat", seed=7)
    config = json.loads((chat / "tokenizer_config.json").read_text())
    config["chat_template"] = CHAT_TEMPLATE
    (chat / "tokenizer_config.json").write_text(json.dumps(config))
    register_model(team, name="chat", kind="hf", config={"path": str(chat)})
    register_blend(team, name="vote", strategy="majority_vote", params={}, members=["m0", "m1", "m2"])
    register_blend(team, name="learned", strategy="stacking", params={}, members=["m0", "m1"])
    register_blend(team, name="fused", strategy="gen_fuser", params={"fuser": "m2"}, members=["m0", "m1"])
    return ApiToken.issue(team, "serve")[1], [*paths, chat]


# US dollars per million tokens, as a provider quotes them.
PRICES = {"input_per_million": 0.5, "output_per_million": 2.0}


# Each turn as "<role> <content>", then the answer cue: a template the word-level tokenizer can count.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} \n {% endfor %}"
    "{% if add_generation_prompt %}Answer:{% endif %}"
)


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
    first = json_request(f"{live_server.url}/v1/chat/completions", body, token)
    count = Generation.objects.count()
    second = json_request(f"{live_server.url}/v1/chat/completions", body, token)
    assert first[1]["choices"][0]["message"] == second[1]["choices"][0]["message"]
    assert Generation.objects.count() == count == 1


def test_a_blend_is_served_like_one_model_and_says_how_it_decided(live_server, served):
    token, _ = served
    status, body = json_request(
        f"{live_server.url}/v1/chat/completions",
        {"model": "vote", "messages": [{"role": "user", "content": "What is 7 - 5 ?"}], "max_tokens": 4},
        token,
    )
    assert status == 200
    how = body["arena"]["blend"]
    assert how["members"] == ["m0", "m1", "m2"]
    assert sum(how["votes"].values()) == 3
    assert body["choices"][0]["message"]["role"] == "assistant"
    # What each member said and cost, and what the whole answer cost: the members' prices, added up.
    said = {answer["member"]: answer for answer in how["answers"]}
    assert list(said) == ["m0", "m1", "m2"] and all(not answer["cached"] for answer in said.values())
    for answer in said.values():
        used = answer["usage"]
        assert used["cost"] == pytest.approx((used["prompt_tokens"] * 0.5 + used["completion_tokens"] * 2.0) / 1e6)
    assert body["usage"]["cost"] == pytest.approx(sum(answer["usage"]["cost"] for answer in said.values()))
    assert body["usage"]["cost"] > 0
    assert body["usage"]["total_tokens"] == sum(answer["usage"]["total_tokens"] for answer in said.values())
    assert body["arena"]["cost"] == how["cost"]
    assert how["cost"]["calls"] == how["cost"]["new_calls"] == 3
    assert how["cost"]["tokens"] == body["usage"]["total_tokens"]
    assert how["answer"] in {answer["answer"] for answer in said.values()} | {""}


def test_a_fuser_blend_calls_its_fuser_model_and_caches_the_call(live_server, served):
    token, _ = served
    body = {"model": "fused", "messages": [{"role": "user", "content": "What is 2 + 2 ?"}], "max_tokens": 4}
    status, first = json_request(f"{live_server.url}/v1/chat/completions", body, token)
    assert status == 200, first
    assert first["arena"]["blend"]["strategy"] == "gen_fuser"
    count = Generation.objects.count()
    assert count == 3  # two members and the fuser
    status, second = json_request(f"{live_server.url}/v1/chat/completions", body, token)
    assert second["choices"][0]["message"] == first["choices"][0]["message"]
    assert Generation.objects.count() == count


def test_models_lists_the_teams_entries_only(live_server, served):
    token, _ = served
    status, body = json_request(f"{live_server.url}/v1/models", None, token)
    assert status == 200
    assert {model["id"] for model in body["data"]} == {"m0", "m1", "m2", "chat", "vote", "learned", "fused"}


def test_bad_requests_get_openai_style_errors(live_server, served, team):
    token, _ = served
    url = f"{live_server.url}/v1/chat/completions"
    assert json_request(url, {"model": "m0", "messages": [{"role": "user", "content": "x"}]}, None)[0] == 401
    assert json_request(url, {"model": "m0", "messages": [{"role": "user", "content": "x"}]}, "arena_wrong")[0] == 401
    status, body = json_request(url, {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, token)
    assert status == 404 and body["error"]["param"] == "model"
    status, body = json_request(url, {"model": "m0", "messages": []}, token)
    assert status == 400 and "messages" in body["error"]["message"]
    status, body = json_request(url, {"model": "learned", "messages": [{"role": "user", "content": "x"}]}, token)
    assert status == 422 and "dev split" in body["error"]["message"]


def test_another_teams_token_cannot_reach_these_models(live_server, served):
    from arena.teams.models import Team

    other = ApiToken.issue(Team.objects.get(slug="blue"), "blue")[1]
    remote = make_backend(
        "openai", {"base_url": f"{live_server.url}/v1", "model": "m0", "api_key": other, "max_retries": 0}
    )
    with pytest.raises(BackendError, match="HTTP 404"):
        remote.generate(["hi"], DecodingParams(max_new_tokens=2))


@pytest.fixture
def sdk(live_server, served):
    token, paths = served
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=token, max_retries=0, timeout=60)
    yield client, paths
    client.close()


CONVERSATION = [
    {"role": "system", "content": "What is 1 + 1 ?"},
    {"role": "developer", "content": "Answer:"},
    {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "2 + 2 ?"}]},
    {"role": "assistant", "content": None},
    {"role": "user", "content": "What is 3 ?"},
]
# As every chat template reads it: developer is system, text parts joined by newlines, null content empty.
TURNS = [
    {"role": "system", "content": "What is 1 + 1 ?"},
    {"role": "system", "content": "Answer:"},
    {"role": "user", "content": "What is\n2 + 2 ?"},
    {"role": "assistant", "content": ""},
    {"role": "user", "content": "What is 3 ?"},
]


def test_the_sdk_sends_a_whole_conversation_through_the_models_chat_template(sdk):
    client, paths = sdk
    answer = client.chat.completions.create(model="chat", messages=CONVERSATION, max_tokens=4, stop=[])
    tokenizer = AutoTokenizer.from_pretrained(paths[3])
    templated = tokenizer.apply_chat_template(TURNS, tokenize=False, add_generation_prompt=True)
    assert answer.usage.prompt_tokens == len(tokenizer(templated, add_special_tokens=False)["input_ids"])
    local = make_backend("hf", {"path": str(paths[3])}, options=BackendOptions(device="cpu"))
    [expected] = local.generate([TURNS], DecodingParams(max_new_tokens=4, stop=()))
    assert answer.choices[0].message.content == expected.text
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_a_model_without_a_chat_template_reads_the_conversation_as_a_transcript(sdk):
    client, paths = sdk
    answer = client.chat.completions.create(model="m0", messages=CONVERSATION, max_tokens=3, stop=[])
    local = make_backend("hf", {"path": str(paths[0])}, options=BackendOptions(device="cpu"))
    [expected] = local.generate([transcript(TURNS)], DecodingParams(max_new_tokens=3, stop=()))
    assert answer.choices[0].message.content == expected.text
    assert answer.usage.prompt_tokens == expected.prompt_tokens


def test_n_samples_stop_lists_and_max_completion_tokens_are_honoured(sdk):
    client, _ = sdk
    ask = {"model": "m1", "messages": [{"role": "user", "content": "What is 4 ?"}], "seed": 3}
    cut = client.chat.completions.create(**ask, max_completion_tokens=2, stop=None)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2
    samples = client.chat.completions.create(**ask, n=3, temperature=1.5, max_completion_tokens=6)
    assert [choice.index for choice in samples.choices] == [0, 1, 2]
    texts = [choice.message.content for choice in samples.choices]
    assert len(set(texts)) > 1, "each choice is its own sample"
    again = client.chat.completions.create(**ask, n=3, temperature=1.5, max_completion_tokens=6)
    assert [choice.message.content for choice in again.choices] == texts  # seeded samples, from the generation cache
    full = client.chat.completions.create(**ask, max_tokens=6, stop=[]).choices[0].message.content
    stop = f" {full.split()[2]} "
    stopped = client.chat.completions.create(**ask, max_tokens=6, stop=["no such text", stop])
    assert stopped.choices[0].message.content == full[: full.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    greedy = client.chat.completions.create(**ask, n=2, max_tokens=3)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content


def test_logprobs_carry_token_strings_bytes_and_the_top_alternatives(sdk):
    client, _ = sdk
    ask = {"messages": [{"role": "user", "content": "What is 5 ?"}], "max_tokens": 4, "stop": []}
    answer = client.chat.completions.create(model="m2", **ask, logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens == 4
    assert " ".join(item.token for item in content) == answer.choices[0].message.content
    for item in content:
        assert item.bytes == list(item.token.encode()) and len(item.top_logprobs) == 3
        assert [a.logprob for a in item.top_logprobs] == sorted((a.logprob for a in item.top_logprobs), reverse=True)
        assert item.top_logprobs[0].token == item.token  # greedy takes the most likely token
    plain = client.chat.completions.create(model="m2", **ask)
    assert plain.choices[0].logprobs is None
    voted = client.chat.completions.create(model="vote", **ask, logprobs=True)
    assert voted.choices[0].logprobs.content and voted.choices[0].logprobs.content[0].top_logprobs == []


def test_fields_clients_send_by_default_are_accepted(sdk):
    client, _ = sdk
    answer = client.chat.completions.create(
        model="m0",
        messages=[{"role": "user", "content": "What is 6 ?"}],
        max_tokens=2,
        user="someone",
        response_format={"type": "text"},
        parallel_tool_calls=True,
        frequency_penalty=0,
        presence_penalty=0,
        logit_bias={},
        tool_choice="none",
        stream_options=None,
    )
    assert answer.object == "chat.completion" and answer.choices[0].message.role == "assistant"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logit_bias": {"5": 10}}, "logit_bias"),
        ({"top_logprobs": 2}, "top_logprobs"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}]}
                ]
            },
            "messages[0].content[0].type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0].type",
        ),
    ],
)
def test_what_the_arena_cannot_honour_is_a_400_naming_the_parameter(sdk, extra, param):
    client, _ = sdk
    ask = {"model": "m0", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**ask)
    assert caught.value.status_code == 400 and caught.value.param == param
    assert caught.value.body["param"] == param and caught.value.body["type"] == "invalid_request_error"


def test_models_retrieve_answers_the_teams_entries_and_404s_the_rest(sdk):
    client, _ = sdk
    card = client.models.retrieve("vote")
    assert card.id == "vote" and card.object == "model" and card.owned_by == "red"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nope")
    assert caught.value.body["type"] == "not_found_error"
    from arena.teams.models import Team

    register_model(Team.objects.get(slug="blue"), name="theirs", kind="hf", config={"path": str(sdk[1][0])})
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("theirs")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="theirs", messages=[{"role": "user", "content": "hi"}])


def test_every_error_comes_in_openais_shape_with_the_sdks_error_types(sdk, live_server, settings):
    client, _ = sdk
    stranger = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="arena_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        stranger.models.list()
    assert caught.value.body["type"] == "authentication_error"
    with pytest.raises(openai.APIStatusError) as caught:
        client.get("/chat/completions", cast_to=object)
    assert caught.value.status_code == 405 and caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        client.get("/no/such/route", cast_to=object)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="m0", messages=[{"role": "user", "content": "1 " * 10_000}])
    assert caught.value.status_code == 413 and "larger" in caught.value.body["message"]
    settings.ARENA_TOKEN_FAILURE_LIMIT = 2
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()  # the second bad token from this address
    with pytest.raises(openai.RateLimitError) as caught:
        client.models.list()  # even a good token, from an address that sent too many bad ones
    assert caught.value.body["type"] == "rate_limit_error"


def test_a_repeated_idempotency_key_returns_the_first_answer_without_paying_again(sdk):
    client, _ = sdk
    ask = {"model": "vote", "messages": [{"role": "user", "content": "What is 8 ?"}], "max_tokens": 3}
    first = client.chat.completions.with_raw_response.create(**ask, extra_headers={"Idempotency-Key": "retry-1"})
    count = Generation.objects.count()
    again = client.chat.completions.with_raw_response.create(**ask, extra_headers={"Idempotency-Key": "retry-1"})
    assert again.parse().id == first.parse().id and again.headers["Idempotent-Replayed"] == "true"
    assert Generation.objects.count() == count
    other = client.chat.completions.create(**ask)
    assert other.id != first.parse().id
    with pytest.raises(openai.ConflictError):
        client.chat.completions.create(**{**ask, "max_tokens": 4}, extra_headers={"Idempotency-Key": "retry-1"})


def test_the_async_sdk_chats_and_reads_models_alongside(live_server, served):
    token, _ = served

    async def main():
        async with openai.AsyncOpenAI(base_url=f"{live_server.url}/v1", api_key=token, max_retries=0) as client:
            ask = {"messages": [{"role": "user", "content": "What is 9 ?"}], "max_tokens": 3}
            answers = await asyncio.gather(
                client.chat.completions.create(model="m0", **ask),
                client.chat.completions.create(model="chat", **ask, logprobs=True),
                client.models.retrieve("m1"),
            )
            with pytest.raises(openai.NotFoundError):
                await client.models.retrieve("nope")
            return answers

    single, templated, card = asyncio.run(main())
    assert single.model == "m0" and single.choices[0].finish_reason in ("stop", "length")
    assert len(templated.choices[0].logprobs.content) == templated.usage.completion_tokens
    assert card.id == "m1"


# --- A blend means at /v1 what it means on the board ----------------------------------------------------


def tie_suite(path: Path) -> LibSuite:
    """Arithmetic items whose dev references are what the model at ``path`` answers: it is right on dev,
    so a blend's ties go its way wherever member order breaks them."""
    base = get_builtin("arithmetic", size=16)
    decoding = DecodingParams(max_new_tokens=base.manifest.max_new_tokens, stop=tuple(base.manifest.stop))
    dev = [item for item in base.items if item.split == "dev"]
    said = make_backend("hf", {"path": str(path)}, options=BackendOptions(device="cpu")).generate(
        [base.render_prompt(item) for item in dev], decoding
    )
    right = {item.id: base.extract(gen.text) or "0" for item, gen in zip(dev, said, strict=True)}
    items = [item.model_copy(update={"reference": right.get(item.id, item.reference)}) for item in base.items]
    return LibSuite(base.manifest.model_copy(update={"name": "ties"}), items)


def lm_eval_chat(url: str, token: str, model: str, suite: LibSuite, directory: Path) -> dict[str, str]:
    """lm-eval's local-chat-completions model generating each item's answer: its text by item id."""
    data = directory / "items.jsonl"
    data.write_text("".join(json.dumps({"id": i.id, "prompt": suite.render_prompt(i)}) + "\n" for i in suite.items))
    (directory / "arena_items.yaml").write_text(
        "task: arena_items\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{prompt}}"\n'
        'doc_to_target: ""\n'
        "generation_kwargs:\n"
        f"  until: {json.dumps(suite.manifest.stop)}\n"
        f"  max_gen_toks: {suite.manifest.max_new_tokens}\n"
        "  do_sample: false\n"
        "  temperature: 0\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    out = directory / "out"
    offline = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(directory / "hf")}
    command = [
        str(Path(sys.executable).with_name("lm_eval")),
        "--model",
        "local-chat-completions",
        "--model_args",
        f"model={model},base_url={url}/v1/chat/completions,max_retries=1",
        "--apply_chat_template",
        "--tasks",
        "arena_items",
        "--include_path",
        str(directory),
        "--output_path",
        str(out),
        "--log_samples",
    ]
    env = {**os.environ, "OPENAI_API_KEY": token, **offline}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [samples] = list(out.rglob("samples_arena_items_*.jsonl"))
    return {s["doc"]["id"]: s["resps"][0][0] for s in map(json.loads, samples.read_text().splitlines())}


@pytest.mark.slow
def test_a_vote_blend_answers_at_v1_what_the_board_stored_ties_included_and_lm_eval_agrees(
    worker, live_server, served, team, owner, tmp_path
):
    token, paths = served
    library = tie_suite(paths[1])
    suite = SuiteFactory(team=team, library=library)
    # m0 first: member order would give it every tie; m1's better dev score gives them to m1 instead.
    pair = register_blend(team, name="pair", strategy="majority_vote", params={}, members=["m0", "m1"])
    run = create_run(team, suite, [pair], splits=["dev", "test"], user=owner)
    run = wait_for(lambda: finished(run.pk), timeout=300, what="the run to finish")
    assert run.state == State.DONE, run.error
    stored = {
        (s.entry.name, s.item.key): s.prediction for s in Score.objects.filter(run=run).select_related("entry", "item")
    }
    url = f"{live_server.url}/v1/chat/completions"
    ties = []
    for item in library.items:
        ask = {
            "model": "pair",
            "messages": [{"role": "user", "content": library.render_prompt(item)}],
            "max_tokens": library.manifest.max_new_tokens,
            "stop": library.manifest.stop,
        }
        status, body = json_request(url, ask, token)
        assert status == 200, body
        how = body["arena"]["blend"]
        assert how["read_as"]["run"] == run.pk and how["read_as"]["extraction"] == "number"
        assert how["answer"] == stored[("pair", item.id)], item.id
        said = {answer["member"]: answer["answer"] for answer in how["answers"]}
        assert said == {"m0": stored[("m0", item.id)], "m1": stored[("m1", item.id)]}, item.id
        # The run's answers are all cached: serving them again costs no model call.
        assert how["cost"]["calls"] == 2 and how["cost"]["new_calls"] == 0
        if said["m0"] and said["m1"] and said["m0"] != said["m1"]:
            ties.append(item.id)
            assert how["answer"] == said["m1"], item.id
    weights = how["read_as"]["dev_weights"]
    assert weights["m1"] > weights["m0"]
    assert ties, "the members never disagreed, so no tie was decided"

    # lm-eval's chat-completions client, on the same items against m1, gets the answers the run stored.
    texts = lm_eval_chat(live_server.url, token, "m1", library, tmp_path)
    assert sorted(texts) == sorted(item.id for item in library.items)
    for item in library.items:
        assert library.extract(texts[item.id]) == stored[("m1", item.id)], item.id
