"""Backends on a tiny random llama, a broken GGUF, and a real local HTTP endpoint."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ensembles.backends import (
    BackendError,
    BackendOptions,
    DecodingParams,
    ModelPool,
    TransientBackendError,
    make_backend,
)
from ensembles.errors import ParamsError, UnknownNameError

PROMPTS = ["Question: What is 1 + 2 ? Answer:", "What is 3 ?", "Question: 7 - 5 ? Answer:"]


@pytest.fixture
def options(tiny_llama_dir) -> BackendOptions:
    return BackendOptions(model_roots=(tiny_llama_dir.parent,), device="cpu")


def test_greedy_batched_generation_matches_one_prompt_at_a_time(tiny_llama_dir, options):
    backend = make_backend("hf", {"path": str(tiny_llama_dir), "batch_size": 8}, options=options)
    params = DecodingParams(max_new_tokens=5, stop=())
    batched = backend.generate(PROMPTS, params)
    single = [backend.generate([p], params)[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    for g in batched:
        assert 0 < g.completion_tokens <= 5
        assert len(g.token_logprobs) == g.completion_tokens
        assert all(lp <= 0 for lp in g.token_logprobs)
        assert g.prompt_tokens > 0 and g.latency_s > 0


def test_a_static_kv_cache_gives_the_same_greedy_tokens_and_scores(tiny_llama_dir, options):
    params = DecodingParams(max_new_tokens=5, stop=())
    eager = make_backend("hf", {"path": str(tiny_llama_dir), "batch_size": 8}, options=options)
    static = make_backend("hf", {"path": str(tiny_llama_dir), "batch_size": 8, "static_cache": True}, options=options)
    # Prompts of different lengths, so the fixed-size cache holds left padding too.
    expected, got = eager.generate(PROMPTS, params), static.generate(PROMPTS, params)
    assert [g.text for g in got] == [g.text for g in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)
    with pytest.raises(ParamsError, match="static_cache"):
        make_backend("hf", {"path": str(tiny_llama_dir), "static_cache": "sometimes"}, options=options)


def drain(stream):
    """The pieces a backend's stream yields, and the Generation it returns."""
    pieces = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as end:
            return pieces, end.value


@pytest.mark.parametrize(
    "params",
    [
        DecodingParams(max_new_tokens=12, stop=()),
        DecodingParams(max_new_tokens=12, stop=("\n",)),
        DecodingParams(max_new_tokens=12, stop=("7", "1 +")),
        DecodingParams(max_new_tokens=12, temperature=0.9, seed=3, stop=()),
    ],
)
def test_a_streamed_generation_joins_into_the_generated_one(tiny_llama_dir, options, params):
    backend = make_backend("hf", {"path": str(tiny_llama_dir)}, options=options)
    for prompt in PROMPTS:
        [whole] = backend.generate([prompt], params)
        pieces, out = drain(backend.stream(prompt, params))
        assert "".join(pieces) == out.text == whole.text
        assert out.token_logprobs == whole.token_logprobs
        assert (out.prompt_tokens, out.completion_tokens) == (whole.prompt_tokens, whole.completion_tokens)


def test_closing_a_stream_stops_its_generation(tiny_llama_dir, options):
    backend = make_backend("hf", {"path": str(tiny_llama_dir)}, options=options)
    stream = backend.stream(PROMPTS[0], DecodingParams(max_new_tokens=4096, stop=()))
    next(stream)
    [generating] = [t for t in threading.enumerate() if t.name == "arena-stream-generate"]
    stream.close()
    generating.join(timeout=10)  # 4096 tokens would take far longer
    assert not generating.is_alive()


def test_a_backend_that_cannot_stream_yields_its_whole_generation_at_once(endpoint):
    server = endpoint([(200, completion("42"))])
    backend = make_backend("openai", {"base_url": server.url, "model": "m"})
    pieces, out = drain(super(type(backend), backend).stream("hi", DecodingParams()))
    assert pieces == ["42"] and out.text == "42"


def test_sampling_is_reproducible_for_a_seed(tiny_llama_dir, options):
    backend = make_backend("hf", {"path": str(tiny_llama_dir)}, options=options)
    params = DecodingParams(max_new_tokens=6, temperature=1.0, seed=7, stop=())
    assert [g.text for g in backend.generate(PROMPTS, params)] == [g.text for g in backend.generate(PROMPTS, params)]


def test_a_sample_depends_on_its_prompt_and_seed_not_on_the_batch_it_shares(tiny_llama_dir, options):
    backend = make_backend("hf", {"path": str(tiny_llama_dir), "batch_size": 8}, options=options)
    params = DecodingParams(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=7, stop=())
    batched = backend.generate(PROMPTS, params)
    alone = [backend.generate([p], params)[0] for p in PROMPTS]
    reordered = backend.generate(PROMPTS[::-1], params)[::-1]
    assert [g.text for g in batched] == [g.text for g in alone] == [g.text for g in reordered]
    for g in batched:
        # The drawn tokens' log-probabilities under the warped distribution, one per kept token.
        assert len(g.token_logprobs) == g.completion_tokens > 0
        assert all(lp <= 0 for lp in g.token_logprobs)
    other_seeds = [backend.generate(PROMPTS, params.model_copy(update={"seed": s})) for s in (8, 9)]
    assert len({tuple(g.text for g in run) for run in [batched, *other_seeds]}) == 3


def test_loglikelihood_of_a_continuation_is_a_finite_negative_number(tiny_llama_dir, options):
    backend = make_backend("hf", {"path": str(tiny_llama_dir)}, options=options)
    one, two = backend.loglikelihood([("What is", " 3"), ("What is", " 3 + 4")])
    assert one < 0 and two < one


def test_batched_loglikelihood_matches_one_request_at_a_time(tiny_llama_dir, options):
    requests = [
        ("The capital of France is", " Paris"),
        ("Q: 2 + 2?\nA:", " 4"),
        ("A much longer context, so that the rows of one batch need padding on the left:", " yes it does"),
        ("x", " y z"),
    ]
    batched = make_backend("hf", {"path": str(tiny_llama_dir), "batch_size": 4}, options=options)
    single = make_backend("hf", {"path": str(tiny_llama_dir), "batch_size": 1}, options=options)
    assert batched.loglikelihood(requests) == pytest.approx(single.loglikelihood(requests), abs=1e-4)


def test_the_fingerprint_is_stable_and_changes_with_the_weights(tiny_llama_dir, options, tmp_path):
    first = make_backend("hf", {"path": str(tiny_llama_dir)}, options=options).fingerprint()
    assert first == make_backend("hf", {"path": str(tiny_llama_dir)}, options=options).fingerprint()
    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama_dir, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    other = make_backend("hf", {"path": str(copy)}, options=BackendOptions()).fingerprint()
    assert other != first


def test_pickle_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(BackendError, match="pickle"):
        make_backend("hf", {"path": str(tmp_path)}).check()


def test_remote_code_cannot_even_be_asked_for(tiny_llama_dir):
    with pytest.raises(ParamsError, match="trust_remote_code"):
        make_backend("hf", {"path": str(tiny_llama_dir), "trust_remote_code": True})


def test_paths_outside_the_model_roots_are_refused(tiny_llama_dir, tmp_path):
    options = BackendOptions(model_roots=(tmp_path / "elsewhere",))
    with pytest.raises(BackendError, match="outside the allowed model roots"):
        make_backend("hf", {"path": str(tiny_llama_dir)}, options=options).check()


def test_a_file_that_is_not_gguf_is_refused_by_its_magic_bytes(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(BackendError, match="not a GGUF file"):
        make_backend("gguf", {"path": str(fake)}).check()


def test_a_gguf_that_fails_to_load_leaves_no_export_behind(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    cache = tmp_path / "cache"
    backend = make_backend("gguf", {"path": str(broken)}, options=BackendOptions(cache_dir=cache))
    with pytest.raises(BackendError, match="could not load GGUF"):
        backend.load()
    assert list((cache / "gguf").iterdir()) == []


def test_an_unknown_backend_suggests_the_closest_name():
    with pytest.raises(UnknownNameError, match="did you mean 'gguf'"):
        make_backend("ggfu", {})


def test_the_pool_keeps_the_most_recently_used_models(tiny_llama_dir, options):
    pool = ModelPool(max_models=2)
    made = []

    def maker(name):
        def make():
            made.append(name)
            return make_backend("hf", {"path": str(tiny_llama_dir)}, options=options)

        return make

    a = pool.get("a", maker("a"))
    pool.get("b", maker("b"))
    assert pool.get("a", maker("a")) is a  # still loaded: not made again
    pool.get("c", maker("c"))  # evicts b, the least recently used
    assert pool.loaded() == ["a", "c"]
    assert made == ["a", "b", "c"]


def test_the_pool_reports_what_it_holds_while_another_model_is_loading(tiny_llama_dir, options):
    pool = ModelPool(max_models=2)
    pool.get("a", lambda: make_backend("hf", {"path": str(tiny_llama_dir)}, options=options))
    started, release = threading.Event(), threading.Event()

    def slow_make():
        started.set()
        release.wait(timeout=30)
        return make_backend("hf", {"path": str(tiny_llama_dir)}, options=options)

    loader = threading.Thread(target=pool.get, args=("b", slow_make))
    loader.start()
    try:
        assert started.wait(timeout=30)
        assert pool.loaded() == ["a"]  # answers at once, though the load holds the pool's lock
    finally:
        release.set()
        loader.join(timeout=60)
    assert pool.loaded() == ["a", "b"]


class Endpoint:
    """A real HTTP server on loopback that answers like an OpenAI-compatible server, or badly."""

    def __init__(self, answers: list[tuple[int, str]]):
        self.answers = answers
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                status, text = outer.answers.pop(0) if len(outer.answers) > 1 else outer.answers[0]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def completion(text: str, logprobs=(-0.1, -0.2)) -> str:
    return json.dumps(
        {
            "choices": [{"message": {"content": text}, "logprobs": {"content": [{"logprob": lp} for lp in logprobs]}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": len(logprobs)},
        }
    )


@pytest.fixture
def endpoint():
    servers = []

    def start(answers):
        server = Endpoint(answers)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()


def test_openai_backend_reads_text_logprobs_and_usage(endpoint):
    server = endpoint([(200, completion("42\nmore"))])
    backend = make_backend("openai", {"base_url": server.url, "model": "m", "api_key": "sk-secret"})
    [g] = backend.generate(["What is 6 * 7?"], DecodingParams())
    assert g.text == "42" and g.token_logprobs == [-0.1, -0.2] and g.prompt_tokens == 5
    assert server.requests[0]["auth"] == "Bearer sk-secret"
    assert server.requests[0]["body"]["logprobs"] is True


def test_openai_backend_retries_429_and_5xx_then_succeeds(endpoint):
    server = endpoint([(429, "{}"), (503, "{}"), (200, completion("ok"))])
    backend = make_backend("openai", {"base_url": server.url, "model": "m", "max_retries": 3})
    assert backend.generate(["hi"], DecodingParams())[0].text == "ok"
    assert len(server.requests) == 3


def test_openai_backend_gives_up_with_a_transient_error_that_hides_the_key(endpoint):
    server = endpoint([(500, "{}")])
    backend = make_backend("openai", {"base_url": server.url, "model": "m", "max_retries": 1, "api_key": "sk-secret"})
    with pytest.raises(TransientBackendError, match="HTTP 500") as info:
        backend.generate(["hi"], DecodingParams())
    assert "sk-secret" not in str(info.value) and "sk-secret" not in repr(backend.config)


def test_openai_backend_reports_garbage_answers_clearly(endpoint):
    server = endpoint([(200, "<html>not json</html>")])
    backend = make_backend("openai", {"base_url": server.url, "model": "m", "max_retries": 0})
    with pytest.raises(BackendError, match="not JSON"):
        backend.generate(["hi"], DecodingParams())
    server.answers[:] = [(200, json.dumps({"choices": []}))]
    with pytest.raises(BackendError, match="without choices"):
        backend.generate(["hi"], DecodingParams())


def sse(*pieces: str, finish: str = "stop") -> str:
    """An OpenAI-style event stream: one chunk per piece, the finish chunk, the usage chunk, [DONE]."""
    chunks = [{"choices": [{"delta": {"role": "assistant", "content": ""}}]}]
    chunks += [{"choices": [{"delta": {"content": p}, "logprobs": {"content": [{"logprob": -0.5}]}}]} for p in pieces]
    chunks += [{"choices": [{"delta": {}, "finish_reason": finish}]}]
    chunks += [{"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces)}}]
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def test_openai_backend_relays_the_endpoints_stream_up_to_the_stop_sequence(endpoint):
    server = endpoint([(200, sse("4", "2", "\nmore"))])
    backend = make_backend("openai", {"base_url": server.url, "model": "m"})
    pieces, out = drain(backend.stream("What is 6 * 7?", DecodingParams()))
    assert pieces == ["4", "2"] and out.text == "42"
    assert out.prompt_tokens == 5 and out.token_logprobs == [-0.5] * 3
    body = server.requests[0]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_openai_backend_stream_reports_a_refusal_and_a_broken_stream(endpoint):
    server = endpoint([(400, '{"error": {"message": "no such model"}}')])
    backend = make_backend("openai", {"base_url": server.url, "model": "m"})
    with pytest.raises(BackendError, match="HTTP 400.*no such model"):
        drain(backend.stream("hi", DecodingParams()))
    server.answers[:] = [(200, "data: {not json\n\n")]
    with pytest.raises(BackendError, match="not JSON"):
        drain(backend.stream("hi", DecodingParams()))


def test_an_unreachable_endpoint_is_a_transient_error():
    backend = make_backend("openai", {"base_url": "http://127.0.0.1:9/v1", "model": "m", "max_retries": 0})
    with pytest.raises(TransientBackendError, match="unreachable"):
        backend.generate(["hi"], DecodingParams())


def test_openai_backend_offers_no_prompt_loglikelihood_and_says_so():
    backend = make_backend("openai", {"base_url": "http://127.0.0.1:9/v1", "model": "m"})
    with pytest.raises(BackendError, match="fall back to generation"):
        backend.loglikelihood([("a", "b")])


@pytest.mark.slow
def test_the_real_smollm2_gguf_exports_once_and_answers(tmp_path):
    models = Path(__file__).resolve().parents[2] / "data" / "test" / "models"
    gguf = models / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.exists():
        pytest.skip("run `make test` (it places the offline models) to include the real model")
    from pathlib import Path as P

    cache = P.home() / ".cache" / "ensemble-arena" / "models"
    backend = make_backend("gguf", {"path": str(gguf)}, options=BackendOptions(cache_dir=cache))
    backend.load()
    assert (backend.export_dir() / "model.safetensors").exists()
    [g] = backend.generate(["What is 2 + 2? Answer with a number."], DecodingParams(max_new_tokens=6))
    assert g.completion_tokens > 0 and g.token_logprobs


def test_a_generation_says_whether_it_stopped_or_ran_into_max_new_tokens(tiny_llama_dir, options):
    backend = make_backend("hf", {"path": str(tiny_llama_dir)}, options=options)
    [cut] = backend.generate(["What is 3 ?"], DecodingParams(max_new_tokens=4, stop=()))
    assert cut.completion_tokens == 4 and cut.finish_reason == "length"
    stop = f" {cut.text.split()[1]}"
    [stopped] = backend.generate(["What is 3 ?"], DecodingParams(max_new_tokens=4, stop=(stop,)))
    assert stopped.text == cut.text[: cut.text.index(stop)] and stopped.finish_reason == "stop"


def test_generated_tokens_come_with_their_text_and_the_top_alternatives(tiny_llama_dir, options):
    backend = make_backend("hf", {"path": str(tiny_llama_dir)}, options=options)
    [plain] = backend.generate(["What is 3 ?"], DecodingParams(max_new_tokens=4, stop=()))
    assert " ".join(plain.tokens) == plain.text and plain.top_logprobs == []
    [g] = backend.generate(["What is 3 ?"], DecodingParams(max_new_tokens=4, stop=(), top_logprobs=3))
    assert g.text == plain.text and len(g.top_logprobs) == g.completion_tokens
    for token, logprob, top in zip(g.tokens, g.token_logprobs, g.top_logprobs, strict=True):
        assert len(top) == 3 and [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
        assert top[0][0] == token and top[0][1] == pytest.approx(logprob, abs=1e-4)  # greedy takes the likeliest


def test_top_logprobs_at_zero_leave_every_decoding_dump_as_it_was():
    assert "top_logprobs" not in DecodingParams().model_dump(mode="json")
    assert DecodingParams(top_logprobs=2).model_dump(mode="json")["top_logprobs"] == 2


def test_a_conversation_is_rendered_by_the_chat_template_or_read_as_a_transcript(tiny_llama_dir, options, tmp_path):
    turns = [{"role": "system", "content": "1"}, {"role": "user", "content": "What is 3 ?"}]
    plain = make_backend("hf", {"path": str(tiny_llama_dir)}, options=options)
    assert plain.format_prompt(turns) == "system: 1\n\nuser: What is 3 ?\n\nassistant:"
    assert plain.format_prompt("What is 3 ?") == "What is 3 ?"
    chat = tmp_path / "chat"
    shutil.copytree(tiny_llama_dir, chat)
    config = json.loads((chat / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}Answer:"
    (chat / "tokenizer_config.json").write_text(json.dumps(config))
    templated = make_backend("hf", {"path": str(chat)}, options=BackendOptions(device="cpu"))
    assert templated.format_prompt(turns) == "<system> 1 <user> What is 3 ? Answer:"
    assert templated.format_prompt("What is 3 ?") == "<user> What is 3 ? Answer:"
    off = make_backend("hf", {"path": str(chat), "chat_template": "off"}, options=BackendOptions(device="cpu"))
    assert off.format_prompt(turns) == plain.format_prompt(turns)
    [g] = templated.generate([turns], DecodingParams(max_new_tokens=2, stop=()))
    assert g.prompt_tokens == len(templated.tokenizer("<system> 1 <user> What is 3 ? Answer:")["input_ids"])


def test_openai_backend_sends_a_conversation_as_turns_and_reads_tokens_and_finish(endpoint):
    body = {
        "choices": [
            {
                "message": {"content": "4 2"},
                "finish_reason": "length",
                "logprobs": {
                    "content": [
                        {"token": "4", "logprob": -0.1, "top_logprobs": [{"token": "4", "logprob": -0.1}]},
                        {"token": " 2", "logprob": -0.3, "top_logprobs": [{"token": "1", "logprob": -0.2}]},
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    server = endpoint([(200, json.dumps(body))])
    backend = make_backend("openai", {"base_url": server.url, "model": "m"})
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "6 * 7?"}]
    [g] = backend.generate([turns], DecodingParams(stop=(), top_logprobs=1))
    assert server.requests[0]["body"]["messages"] == turns and server.requests[0]["body"]["top_logprobs"] == 1
    assert g.tokens == ["4", " 2"] and g.top_logprobs == [[("4", -0.1)], [("1", -0.2)]]
    assert g.finish_reason == "length"
