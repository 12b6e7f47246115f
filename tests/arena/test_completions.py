"""`/v1/completions` over real HTTP, and lm-evaluation-harness's `local-completions` model scoring through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from arena.evaluations.models import Generation
from arena.registry.services import register_blend, register_model
from arena.teams.models import ApiToken
from ensembles.backends import BackendOptions, make_backend
from tests.helpers import json_request

pytestmark = pytest.mark.django_db(transaction=True)

# Words of the tiny llama's vocabulary, so every prompt tokenizes without <unk>; no item has two equal options
# (an exact tie between them would go whichever way rounding tips it).
ITEMS = [(a, b) for a, b in [(1, 2), (3, 4), (5, 6), (7, 1), (2, 9), (8, 8), (4, 3), (6, 1), (9, 5), (3, 3)]]


@pytest.fixture
def served(team, settings, tiny_variant, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    paths = [tiny_variant(root / f"m{i}", seed=i) for i in range(2)]
    for i, path in enumerate(paths):
        register_model(team, name=f"m{i}", kind="hf", config={"path": str(path), "prices": PRICES})
    register_blend(team, name="pool", strategy="logprob_pool", params={"pool": "log_linear"}, members=["m0", "m1"])
    register_blend(team, name="linear", strategy="logprob_pool", params={"pool": "linear"}, members=["m0", "m1"])
    register_blend(team, name="vote", strategy="majority_vote", params={}, members=["m0", "m1"])
    return ApiToken.issue(team, "serve")[1], paths


# US dollars per million tokens, as a provider quotes them.
PRICES = {"input_per_million": 1.5, "output_per_million": 4.0}


def local(path: Path):
    return make_backend("hf", {"path": str(path)}, options=BackendOptions(device="cpu"))


def test_echo_with_max_tokens_0_gives_each_prompt_tokens_log_probability(live_server, served):
    token, paths = served
    backend = local(paths[0])
    backend.load()
    context, continuation = "What is 3 + 4 ?", " 7"
    ids = backend.encode(context + continuation)
    body = {"model": "m0", "prompt": [ids], "max_tokens": 0, "echo": True, "logprobs": 2}
    status, data = json_request(f"{live_server.url}/v1/completions", body, token)
    assert status == 200, data
    [choice] = data["choices"]
    lp = choice["logprobs"]
    assert lp["tokens"] == ["What", "is", "3", "+", "4", "?", "7"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(len(top) == 2 for top in lp["top_logprobs"][1:])
    assert lp["text_offset"] == [0, 4, 6, 7, 8, 9, 10]
    [expected] = backend.loglikelihood([(context, continuation)])
    assert lp["token_logprobs"][-1] == pytest.approx(expected, abs=1e-4)
    assert data["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 0,
        "total_tokens": 7,
        "cost": pytest.approx(7 * 1.5 / 1e6),
    }
    assert choice["text"] == backend.tokenizer.decode(ids)  # the prompt echoed as the tokenizer decodes it


def test_text_prompts_generate_n_choices_with_finish_reason_and_logprobs(live_server, served):
    token, _ = served
    body = {
        "model": "m0",
        "prompt": ["What is 1 + 2 ?", "What is 5 + 5 ?"],
        "max_tokens": 3,
        "temperature": 0,
        "n": 2,
        "logprobs": 1,
    }
    status, data = json_request(f"{live_server.url}/v1/completions", body, token)
    assert status == 200, data
    assert [choice["index"] for choice in data["choices"]] == [0, 1, 2, 3]
    assert data["choices"][0]["text"] == data["choices"][1]["text"]  # greedy: the same answer twice
    for choice in data["choices"]:
        assert choice["finish_reason"] in ("stop", "length")
        assert len(choice["logprobs"]["tokens"]) == len(choice["logprobs"]["token_logprobs"]) <= 3
    assert data["usage"]["prompt_tokens"] == 12  # six tokens each, counted once per prompt however many n
    assert data["usage"]["cost"] == pytest.approx((12 * 1.5 + data["usage"]["completion_tokens"] * 4.0) / 1e6)
    assert data["arena"]["cost"]["calls"] == 2 and data["arena"]["cost"]["new_calls"] == 2

    # The same completions again come from the generations cache, and stream as vLLM streams them.
    count = Generation.objects.count()
    assert count == 2
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=token, max_retries=0)
    stream = client.completions.create(**body, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert {chunk.object for chunk in chunks} == {"text_completion"}
    texts = ["", "", "", ""]
    finished = {}
    for chunk in chunks[:-1]:
        [choice] = chunk.choices
        texts[choice.index] += choice.text
        if choice.finish_reason:
            finished[choice.index] = choice.finish_reason
    assert texts == [choice["text"] for choice in data["choices"]]
    assert finished == {choice["index"]: choice["finish_reason"] for choice in data["choices"]}
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == data["usage"]["total_tokens"]
    assert chunks[-1].usage.cost == pytest.approx(data["usage"]["cost"])
    assert chunks[-1].arena["cost"]["new_calls"] == 0
    assert Generation.objects.count() == count


def test_a_probability_pool_blend_scores_tokens_by_the_members_mean_log_probability(live_server, served):
    token, paths = served
    ids = [6, 7, 12 + 3, 8, 12 + 4, 10]
    body = {"model": "pool", "prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 0}
    status, data = json_request(f"{live_server.url}/v1/completions", body, token)
    assert status == 200, data
    pooled = data["choices"][0]["logprobs"]["token_logprobs"]
    members = []
    for path in paths:
        backend = local(path)
        members.append([token_score.logprob for token_score in backend.score_tokens([ids], [0])[0]])
    expected = [(a + b) / 2 for a, b in zip(*members, strict=True)]
    assert pooled[0] is None
    assert pooled[1:] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        ("vote", {"echo": True, "max_tokens": 0, "logprobs": 0}, "logprobs"),
        ("pool", {"max_tokens": 2, "echo": True, "logprobs": 0}, "max_tokens"),
        ("pool", {"max_tokens": 1, "echo": True, "logprobs": 1}, "temperature"),
        ("pool", {"echo": True, "max_tokens": 0, "n": 2}, "n"),
        ("vote", {"echo": True, "max_tokens": 0}, "echo"),
        ("linear", {"echo": True, "max_tokens": 0, "logprobs": 0}, "logprobs"),
        ("m0", {"prompt": [5, 99999]}, "prompt"),
        ("m0", {"prompt": []}, "prompt"),
        ("m0", {"prompt": ""}, "prompt"),
        ("m0", {"prompt": ["1", ""], "echo": True, "max_tokens": 0}, "prompt"),
        ("m0", {"prompt": [5] * 600, "max_tokens": 0}, "prompt"),  # past the tiny llama's 512 positions
        ("pool", {"prompt": [5] * 600, "echo": True, "max_tokens": 0, "logprobs": 0}, "prompt"),
        ("m0", {"prompt": [[5, 6], []]}, "prompt"),
        ("m0", {"prompt": [5, "a"]}, "prompt"),
        ("m0", {"stop": [""]}, "stop"),
        ("m0", {"max_tokens": -1}, "max_tokens"),
        ("m0", {"logprobs": 50}, "logprobs"),
        ("nope", {}, "model"),
    ],
)
def test_what_cannot_be_answered_gets_an_openai_error_naming_the_parameter(live_server, served, model, extra, param):
    token, _ = served
    body = {"model": model, "prompt": "What is 1 + 2 ?", **extra}
    status, data = json_request(f"{live_server.url}/v1/completions", body, token)
    assert status in (400, 404), data
    assert data["error"]["param"] == param
    assert data["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_another_teams_token_cannot_reach_these_models(live_server, served, outsider):
    from arena.teams.models import Team

    other = ApiToken.issue(Team.objects.get(slug="blue"), "other")[1]
    status, data = json_request(f"{live_server.url}/v1/completions", {"model": "m0", "prompt": "1"}, other)
    assert status == 404 and data["error"]["param"] == "model"
    status, data = json_request(f"{live_server.url}/v1/completions", {"model": "m0", "prompt": "1"}, None)
    assert status == 401 and data["error"]["type"] == "authentication_error"


def write_task(directory: Path) -> Path:
    """A multiple-choice lm-eval task over a local JSONL file: which number is a + b."""
    rows = []
    for a, b in ITEMS:
        choices = [str(a + b), str(a + b + 1), str(abs(a - b)), str(a * b)]
        rows.append({"a": a, "b": b, "choices": choices, "gold": 0})
    data = directory / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (directory / "tiny_sums.yaml").write_text(
        "task: tiny_sums\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: What is {{a}} + {{b}} ? Answer:"\n'
        "doc_to_choice: choices\n"
        "doc_to_target: gold\n"
        "metric_list:\n  - metric: acc\n"
    )
    return data


def run_lm_eval(url: str, token: str, model: str, tokenizer: Path, tasks: Path, out: Path) -> tuple[dict, float]:
    """lm-eval's local-completions model on the tiny task: each doc's option log-likelihoods, and its accuracy."""
    model_args = ",".join(
        [
            f"model={model}",
            f"base_url={url}/v1/completions",
            f"tokenizer={tokenizer}",
            "tokenizer_backend=huggingface",
            "tokenized_requests=True",
        ]
    )
    lm_eval = Path(sys.executable).with_name("lm_eval")
    assert lm_eval.exists(), "lm-eval is a dev dependency: pip install -e '.[dev]'"
    # Offline, and the JSONL's dataset cache under the test's own directory.
    offline = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(out.parent / "hf-datasets")}
    env = {**os.environ, "OPENAI_API_KEY": token, **offline}
    command = [
        str(lm_eval),
        "--model",
        "local-completions",
        "--model_args",
        model_args,
        "--tasks",
        "tiny_sums",
        "--include_path",
        str(tasks),
        "--output_path",
        str(out),
        "--log_samples",
        # Four requests a call: the prompt arrives as a list of token-id lists.
        "--batch_size",
        "4",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [samples] = list(out.rglob("samples_tiny_sums_*.jsonl"))
    logliks = {}
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        logliks[sample["doc_id"]] = [float(resp[0][0]) for resp in sample["resps"]]
    [results] = list(out.rglob("results_*.json"))
    return logliks, json.loads(results.read_text())["results"]["tiny_sums"]["acc,none"]


def pick(logliks: list[float]) -> int:
    return max(range(len(logliks)), key=lambda i: logliks[i])  # the first of equals, as both sides do


@pytest.mark.slow
def test_lm_eval_local_completions_picks_what_the_arena_picks_item_for_item(live_server, served, tmp_path):
    from arena.registry.backends import backend_for
    from arena.registry.models import Entry

    token, paths = served
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = write_task(tasks)
    theirs, lm_eval_acc = run_lm_eval(live_server.url, token, "m0", paths[0], tasks, tmp_path / "out")

    # The arena's own scoring of the same items with that entry's backend, as a run scores them.
    backend = backend_for(Entry.objects.get(name="m0"))
    docs = [json.loads(line) for line in data.read_text().splitlines()]
    ours = {}
    for doc_id, doc in enumerate(docs):
        context = f"Question: What is {doc['a']} + {doc['b']} ? Answer:"
        ours[doc_id] = backend.loglikelihood([(context, " " + choice) for choice in doc["choices"]])
    assert sorted(theirs) == sorted(ours) == list(range(len(ITEMS)))
    for doc_id in ours:
        assert theirs[doc_id] == pytest.approx(ours[doc_id], abs=1e-3), doc_id
        assert pick(theirs[doc_id]) == pick(ours[doc_id]), doc_id
    arena_acc = sum(pick(ours[d]) == docs[d]["gold"] for d in ours) / len(docs)
    print(f"\nm0: lm-eval acc {lm_eval_acc:.2f}, arena acc {arena_acc:.2f}")
    assert lm_eval_acc == pytest.approx(arena_acc)


@pytest.mark.slow
def test_lm_eval_picks_what_the_boards_probability_pool_picks_item_for_item(live_server, served, tmp_path):
    from ensembles.strategies import MemberAnswer, make_strategy

    token, paths = served
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = write_task(tasks)
    theirs, _ = run_lm_eval(live_server.url, token, "pool", paths[0], tasks, tmp_path / "out")

    # The board's pool over the members' option log-likelihoods, as a run's combine step reads them.
    members = [local(path) for path in paths]
    board = make_strategy("logprob_pool", {"pool": "log_linear"})
    docs = [json.loads(line) for line in data.read_text().splitlines()]
    for doc_id, doc in enumerate(docs):
        context = f"Question: What is {doc['a']} + {doc['b']} ? Answer:"
        per_member = [m.loglikelihood([(context, " " + choice) for choice in doc["choices"]]) for m in members]
        letters = "ABCD"
        answers = [
            MemberAnswer(member=f"m{i}", answer="", option_logprobs=dict(zip(letters, lls, strict=True)))
            for i, lls in enumerate(per_member)
        ]
        expected = [sum(lls) / len(lls) for lls in zip(*per_member, strict=True)]
        assert theirs[doc_id] == pytest.approx(expected, abs=1e-3), doc_id
        assert letters[pick(theirs[doc_id])] == board.combine(answers).answer, doc_id


def test_a_pool_blend_answers_a_log_likelihood_request_as_lm_eval_sends_it(live_server, served):
    token, _ = served
    ids = [6, 7, 15, 8, 16, 10]
    body = {"model": "pool", "prompt": [ids], "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
    status, data = json_request(f"{live_server.url}/v1/completions", body, token)
    assert status == 200, data
    lp = data["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == len(ids) + 1  # the prompt, then the one pooled next token
    # The next token is the pool's most likely one, so it is its own top alternative.
    [(_, best)] = lp["top_logprobs"][-1].items()
    assert lp["token_logprobs"][-1] == best
    assert all(
        max(top.values()) >= tlp for top, tlp in zip(lp["top_logprobs"][1:], lp["token_logprobs"][1:], strict=True)
    )


@pytest.mark.parametrize(
    "prices", [{"input_per_million": -1, "output_per_million": 1}, {"input_per_million": 1}, "cheap"]
)
def test_prices_that_are_not_prices_are_a_422_at_registration_and_store_nothing(
    api, settings, tiny_variant, tmp_path, prices
):
    from arena.registry.models import Entry

    settings.ARENA_MODEL_ROOTS = [tmp_path]
    path = tiny_variant(tmp_path / "priced", seed=5)
    response = api(
        "post", "/entries", {"name": "priced", "kind": "hf", "config": {"path": str(path), "prices": prices}}
    )
    assert response.status_code == 422, response.content
    assert "prices" in response.json()["detail"]["config"][0]
    assert not Entry.objects.filter(name="priced").exists()
