"""`stream: true` at /v1/chat/completions, read by the clients people use: the openai SDK and LangChain."""

from __future__ import annotations

import asyncio
import threading
import time

import openai
import pytest

from arena.evaluations.models import Generation
from arena.registry.services import register_blend, register_model
from arena.teams.models import ApiToken
from tests.helpers import serve_asgi

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "What is 1 + 2 ?"}]
# US dollars per million tokens, as a provider quotes them.
PRICES = {"input_per_million": 0.5, "output_per_million": 2.0}


@pytest.fixture
def served(team, settings, tiny_variant, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    for i in range(3):
        path = tiny_variant(root / f"m{i}", seed=i)
        register_model(team, name=f"m{i}", kind="hf", config={"path": str(path), "prices": PRICES})
    register_blend(team, name="vote", strategy="majority_vote", params={}, members=["m0", "m1", "m2"])
    register_blend(team, name="learned", strategy="stacking", params={}, members=["m0", "m1"])
    return ApiToken.issue(team, "stream")[1]


@pytest.fixture
def client(live_server, served):
    return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=served, max_retries=0, timeout=60)


def read(stream):
    """The chunks of a stream, and the text of choice 0 they carry."""
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    return chunks, text


def test_a_single_model_streams_its_tokens_and_the_answer_is_the_non_streamed_one(client):
    chunks, text = read(client.chat.completions.create(model="m0", messages=QUESTION, max_tokens=12, stream=True))
    assert all(chunk.object == "chat.completion.chunk" and chunk.id == chunks[0].id for chunk in chunks)
    first, *middle, last = chunks
    assert first.choices[0].delta.role == "assistant" and not first.choices[0].delta.content
    assert len([chunk for chunk in middle if chunk.choices[0].delta.content]) > 1  # tokens, not one block
    assert last.choices[0].finish_reason in ("stop", "length")
    assert all(chunk.choices[0].finish_reason is None for chunk in chunks[:-1])
    assert Generation.objects.count() == 1  # the finished answer is cached
    whole = client.chat.completions.create(model="m0", messages=QUESTION, max_tokens=12)
    assert text == whole.choices[0].message.content
    assert last.choices[0].finish_reason == whole.choices[0].finish_reason
    assert Generation.objects.count() == 1  # and the non-streamed request read it
    # A cached answer is replayed as one delta.
    again, replayed = read(client.chat.completions.create(model="m0", messages=QUESTION, max_tokens=12, stream=True))
    assert replayed == text and len(again) == 3


def test_include_usage_adds_a_last_chunk_with_the_usage_and_no_choices(client):
    stream = client.chat.completions.create(
        model="m1", messages=QUESTION, max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    chunks, _ = read(stream)
    assert chunks[-1].choices == [] and all(chunk.usage is None for chunk in chunks[:-1])
    whole = client.chat.completions.create(model="m1", messages=QUESTION, max_tokens=6)
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].usage.cost == whole.usage.cost > 0  # the cost rides on the usage chunk too
    assert chunks[-1].arena["cost"]["calls"] == 1


def test_litellm_records_a_non_zero_cost_for_a_streamed_blend_answer(live_server, served, client, monkeypatch):
    # The price list litellm ships with, not one fetched at import.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    stream = litellm.completion(
        model="openai/vote",
        api_base=f"{live_server.url}/v1",
        api_key=served,
        messages=QUESTION,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    built = litellm.stream_chunk_builder(list(stream), messages=QUESTION)
    per_token = {
        "input_cost_per_token": PRICES["input_per_million"] / 1e6,
        "output_cost_per_token": PRICES["output_per_million"] / 1e6,
    }
    cost = litellm.completion_cost(completion_response=built, custom_cost_per_token=per_token)
    assert cost > 0
    # What the arena says the same answer cost: every member at the same prices, so the same figure.
    whole = client.chat.completions.create(model="vote", messages=QUESTION, max_tokens=4)
    assert built.usage.total_tokens == whole.usage.total_tokens
    assert cost == pytest.approx(whole.usage.cost)


def test_the_async_client_streams_the_same_answer(live_server, served, client):
    async def stream_text():
        async_client = openai.AsyncOpenAI(base_url=f"{live_server.url}/v1", api_key=served, max_retries=0)
        stream = await async_client.chat.completions.create(model="m2", messages=QUESTION, max_tokens=10, stream=True)
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        await async_client.close()
        return pieces

    pieces = asyncio.run(stream_text())
    whole = client.chat.completions.create(model="m2", messages=QUESTION, max_tokens=10)
    assert "".join(pieces) == whole.choices[0].message.content
    assert len([piece for piece in pieces if piece]) > 1


def test_n_sampled_choices_stream_each_under_its_index_as_the_non_streamed_answer_has_them(client):
    asked = {"model": "m0", "messages": QUESTION, "max_tokens": 6, "n": 2, "temperature": 0.9, "seed": 4}
    texts = {0: "", 1: ""}
    finished = {}
    for chunk in client.chat.completions.create(**asked, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    whole = client.chat.completions.create(**asked)
    assert texts == {choice.index: choice.message.content for choice in whole.choices}
    assert finished == {choice.index: choice.finish_reason for choice in whole.choices}


def test_streamed_logprobs_are_the_non_streamed_ones(client):
    asked = {"model": "m1", "messages": QUESTION, "max_tokens": 5, "logprobs": True, "top_logprobs": 2}
    streamed = [
        token.model_dump()
        for chunk in client.chat.completions.create(**asked, stream=True)
        for choice in chunk.choices
        if choice.logprobs
        for token in choice.logprobs.content
    ]
    whole = client.chat.completions.create(**asked)
    assert streamed == [token.model_dump() for token in whole.choices[0].logprobs.content]
    assert streamed and all(len(piece["top_logprobs"]) == 2 for piece in streamed)


def test_a_blend_streams_its_answer_once_decided(client):
    chunks, text = read(client.chat.completions.create(model="vote", messages=QUESTION, max_tokens=4, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]) == 1
    assert chunks[-1].choices[0].finish_reason is not None
    whole = client.chat.completions.create(model="vote", messages=QUESTION, max_tokens=4)
    assert text == whole.choices[0].message.content and text


def test_a_stream_that_cannot_start_is_an_error_status_not_an_empty_stream(client):
    with pytest.raises(openai.UnprocessableEntityError, match="dev split"):
        client.chat.completions.create(model="learned", messages=QUESTION, stream=True)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=QUESTION, stream=True)


def test_a_client_that_closes_the_stream_stops_the_generation(client):
    def generating():
        return [thread for thread in threading.enumerate() if thread.name == "arena-stream-generate"]

    stream = client.chat.completions.create(model="m0", messages=QUESTION, max_tokens=512, stream=True)
    pieces = iter(stream)
    next(pieces), next(pieces)  # the role chunk and the first token
    [thread] = generating()
    stream.close()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the generation went on after the client left"
    # Stopped, not finished: a generation that ran to its end would be in the cache.
    assert Generation.objects.count() == 0
    whole = client.chat.completions.create(model="m0", messages=QUESTION, max_tokens=512)
    assert whole.choices[0].finish_reason == "length"
    assert Generation.objects.count() == 1


def test_langchain_chat_openai_streams_one_answer(live_server, served, client):
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(
        model="m0", base_url=f"{live_server.url}/v1", api_key=served, streaming=True, max_tokens=8, max_retries=0
    )
    pieces = [chunk.content for chunk in chat.stream("What is 1 + 2 ?")]
    whole = client.chat.completions.create(model="m0", messages=QUESTION, max_tokens=8)
    assert "".join(pieces) == whole.choices[0].message.content
    assert len([piece for piece in pieces if piece]) > 1


# --- Under daphne, as the site is served: the ASGI path -----------------------------------------------


@pytest.fixture
def daphne(served, settings, tmp_path):
    """daphne serving arena.asgi on a free port, on the test database; yields the /v1 base URL and its pid."""
    with serve_asgi(settings.ARENA_MODEL_ROOTS, tmp_path / "daphne.log") as (base, proc):
        yield f"{base}/v1", proc.pid


@pytest.mark.slow
def test_under_daphne_tokens_arrive_as_they_are_generated(daphne, served):
    client = openai.OpenAI(base_url=daphne[0], api_key=served, max_retries=0, timeout=120)
    # As long an answer as the model allows, so that its generation outlasts the first chunk's trip by far.
    pieces = iter(client.chat.completions.create(model="m1", messages=QUESTION, max_tokens=512, stream=True))
    first = next(chunk for chunk in pieces if chunk.choices and chunk.choices[0].delta.content)
    # The answer is stored once it is whole: a response read whole before sending would have stored it
    # before its first token reached the client.
    assert first.choices[0].delta.content and Generation.objects.count() == 0
    rest = [chunk for chunk in pieces if chunk.choices and chunk.choices[0].delta.content]
    assert rest and Generation.objects.count() == 1


@pytest.mark.slow
def test_under_daphne_a_client_that_leaves_stops_the_generation(daphne, served):
    url, _ = daphne
    client = openai.OpenAI(base_url=url, api_key=served, max_retries=0, timeout=120)
    # The same tokens under another seed (greedy ignores it), so another cache key: how long the whole takes.
    started = time.monotonic()
    whole = client.chat.completions.create(model="m0", messages=QUESTION, max_tokens=512, seed=1)
    took = time.monotonic() - started
    assert whole.choices[0].finish_reason == "length" and Generation.objects.count() == 1
    stream = client.chat.completions.create(model="m0", messages=QUESTION, max_tokens=512, stream=True)
    pieces = iter(stream)
    next(pieces), next(pieces)
    stream.close()
    # Given twice the time the whole answer took, a generation that went on would have been stored.
    time.sleep(2 * took + 1)
    assert Generation.objects.count() == 1, "daphne went on generating after the client left"
