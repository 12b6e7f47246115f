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
