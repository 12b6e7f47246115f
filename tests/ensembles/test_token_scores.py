"""Per-token log-probabilities of given token sequences from a local transformers model."""

from __future__ import annotations

import math

import pytest

from ensembles.backends import BackendOptions, DecodingParams, make_backend
from ensembles.backends.hf import linear_pool


@pytest.fixture(scope="module")
def backend(tiny_llama_dir):
    b = make_backend("hf", {"path": str(tiny_llama_dir), "batch_size": 2}, options=BackendOptions(device="cpu"))
    b.load()
    return b


def test_scores_of_the_continuation_sum_to_its_log_likelihood(backend):
    requests = [("What is 1 + 2 ?", " 3"), ("What is 10 + 20 ?", " 30 7"), ("Question: 5", " 5 5 5")]
    expected = backend.loglikelihood(requests)
    sequences = [backend.encode(c + x) for c, x in requests]
    starts = [len(backend.encode(c)) for c, _ in requests]
    scores = backend.score_tokens(sequences, starts, top_k=3)
    for seq, start, row, want in zip(sequences, starts, scores, expected, strict=True):
        assert [s.token for s in row] == seq[start:]
        assert sum(s.logprob for s in row) == pytest.approx(want, abs=1e-4)
        for s in row:
            assert len(s.top) == 3 and s.top[0][1] >= s.top[1][1] >= s.top[2][1]
            assert s.logprob <= s.top[0][1] + 1e-6  # nothing is more likely than the most likely


def test_the_first_token_has_no_score_and_a_greedy_token_is_its_own_top_one(backend):
    [seq] = [backend.encode("What is 4 + 4 ?")]
    [row] = backend.score_tokens([seq], [0], top_k=1)
    assert len(row) == len(seq) - 1
    [done] = backend.generate_ids([seq], DecodingParams(max_new_tokens=3, temperature=0.0, stop=()))
    [scored] = backend.score_tokens([seq + done.ids], [len(seq)], top_k=1)
    assert [s.top[0][0] for s in scored] == done.ids  # greedy: each drawn token was the most likely
    assert done.finish_reason in ("stop", "length")


def test_a_linear_pool_of_a_model_with_itself_is_that_model(backend):
    seq = backend.encode("What is 2 + 3 ? 5")
    [alone] = backend.score_tokens([seq], [0], top_k=2)
    [pooled] = linear_pool([backend, backend], [seq], [0], top_k=2)
    assert [s.logprob for s in pooled.scores] == pytest.approx([s.logprob for s in alone], abs=1e-5)
    assert [s.top[0][0] for s in pooled.scores] == [s.top[0][0] for s in alone]


def test_a_linear_pool_averages_the_probabilities(backend, tiny_variant, tmp_path):
    other = make_backend(
        "hf",
        {"path": str(tiny_variant(tmp_path / "v", seed=3))},
        options=BackendOptions(device="cpu"),
    )
    seq = backend.encode("What is 2 + 3 ? 5")
    [a], [b] = backend.score_tokens([seq], [0]), other.score_tokens([seq], [0])
    [pooled] = linear_pool([backend, other], [seq], [0], top_k=0)
    want = [math.log((math.exp(x.logprob) + math.exp(y.logprob)) / 2) for x, y in zip(a, b, strict=True)]
    assert [s.logprob for s in pooled.scores] == pytest.approx(want, abs=1e-5)
    assert sum(math.exp(lp) for _, lp in linear_pool([backend, other], [seq], [0], top_k=500)[0].following) == (
        pytest.approx(1.0, abs=1e-4)
    )
