"""/v1 answers generated on a real worker: concurrent requests for one model go in one batch, each client
gets its own answer, and a request no worker takes is a clear error."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from arena.evaluations.models import Generation
from arena.registry.backends import backend_for
from arena.registry.services import register_model
from arena.serving import batching
from arena.serving.chat import prompt_of
from arena.serving.protocol import decoding_params, parse_chat
from arena.teams.models import ApiToken
from tests.helpers import WorkerProcess, json_request, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def on_worker(team, settings, tiny_variant, tmp_path, worker_roots, clean_redis):
    """A tiny model served through the worker; (token, entry)."""
    settings.ARENA_SERVE_ON_WORKER = True
    settings.ARENA_MODEL_ROOTS = worker_roots
    path = tiny_variant(tmp_path / "served", seed=3)
    entry = register_model(team, name="served", kind="hf", config={"path": str(path)})
    return ApiToken.issue(team, "batches")[1], entry


def chat(base_url: str, token: str, messages: list[dict]) -> dict:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=token, max_retries=0, timeout=180)
    with client:
        reply = client.chat.completions.create(model="served", messages=messages, max_tokens=6, temperature=0)
    return reply.model_dump()


def test_concurrent_requests_are_generated_in_one_batch_each_with_its_own_in_process_answer(
    live_server, on_worker, worker_roots, clean_redis
):
    token, entry = on_worker
    conversations = [[{"role": "user", "content": f"What is {i} + {i + 1} ?"}] for i in range(5)]
    conversations.append([{"role": "system", "content": "Answer:"}, {"role": "user", "content": "What is 7 - 2 ?"}])
    with ThreadPoolExecutor(len(conversations)) as pool:
        replies = [pool.submit(chat, live_server.url, token, c) for c in conversations]
        # Every request waits in its model's lane before any worker runs: they arrived together.
        wait_for(
            lambda: [clean_redis.llen(k) for k in clean_redis.keys("serving:lane:*")] == [len(conversations)],
            what="every request waiting in one lane",
        )
        worker = WorkerProcess(worker_roots).start()
        try:
            answers = [r.result()["choices"][0]["message"]["content"] for r in replies]
        finally:
            worker.stop()

    batches = batching.recent_batches()
    assert [(b["size"], b["generated"]) for b in batches] == [(len(conversations), len(conversations))]
    assert Generation.objects.filter(fingerprint=backend_for(entry).fingerprint()).count() == len(conversations)
    assert len(set(answers)) == len(answers)  # each client got its own answer, not a neighbour's
    # The same answers as the model gives each prompt alone, in this process.
    backend = backend_for(entry)
    for conversation, answer in zip(conversations, answers, strict=True):
        body = parse_chat(json.dumps({"model": "served", "messages": conversation, "max_tokens": 6}).encode())
        [alone] = backend.generate([prompt_of(body)], decoding_params(body))
        assert answer == alone.text
    # With the worker gone, an answer made before comes from the cache.
    assert chat(live_server.url, token, conversations[0])["choices"][0]["message"]["content"] == answers[0]


def test_a_request_no_worker_takes_is_a_503_after_the_timeout_and_leaves_nothing_behind(
    live_server, on_worker, settings, clean_redis
):
    token, entry = on_worker
    settings.ARENA_SERVE_TIMEOUT_S = 1
    body = {"model": "served", "messages": [{"role": "user", "content": "What is 1 + 1 ?"}], "max_tokens": 4}
    status, data = json_request(f"{live_server.url}/v1/chat/completions", body, token)
    assert status == 503
    assert data["error"]["code"] == "worker_unavailable"
    assert "no worker took this request within 1 s" in data["error"]["message"]
    assert [clean_redis.llen(k) for k in clean_redis.keys("serving:lane:*")] in ([], [0])
    assert not Generation.objects.filter(fingerprint=backend_for(entry).fingerprint()).exists()
