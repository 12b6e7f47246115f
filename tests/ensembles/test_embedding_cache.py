"""Encoder outputs cached by content: (encoder fingerprint, text) -> vector, in a SQLite file."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from ensembles.errors import EnsembleError
from ensembles.strategies import STRATEGIES, CachedEmbedder, MiniLMEmbedder
from tests.ensembles.helpers import code_items, trigram_embedder


class CountingEncoder:
    """The trigram encoder, counting the texts it is asked to encode."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.seen.extend(texts)
        return trigram_embedder(texts)


def test_a_second_embedder_on_the_same_file_encodes_nothing_and_returns_the_same_vectors(tmp_path):
    texts = ["What is 7 + 5?", "Name the capital of Peru.", "What is 7 + 5?"]
    first_encoder, second_encoder = CountingEncoder(), CountingEncoder()
    first = CachedEmbedder(first_encoder, tmp_path / "vectors.sqlite3", fingerprint="trigram-v1")
    vectors = first(texts)
    assert first_encoder.seen == texts[:2]  # a text asked for twice is encoded once
    assert (first.encoded, first.reused) == (2, 0)

    second = CachedEmbedder(second_encoder, tmp_path / "vectors.sqlite3", fingerprint="trigram-v1")
    again = second(list(reversed(texts)))
    assert second_encoder.seen == []
    assert (second.encoded, second.reused) == (0, 2)
    assert np.array_equal(again, vectors[::-1])
    assert np.array_equal(vectors, trigram_embedder(texts))


def test_another_encoder_fingerprint_encodes_again(tmp_path):
    path = tmp_path / "vectors.sqlite3"
    CachedEmbedder(CountingEncoder(), path, fingerprint="trigram-v1")(["hello"])
    other = CountingEncoder()
    CachedEmbedder(other, path, fingerprint="trigram-v2")(["hello"])
    assert other.seen == ["hello"]


def test_workers_writing_the_same_file_at_once_all_get_their_vectors(tmp_path):
    path = tmp_path / "vectors.sqlite3"
    texts = [f"item {i}" for i in range(200)]
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(CachedEmbedder(CountingEncoder(), path, fingerprint="trigram-v1")(texts))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert all(np.array_equal(r, trigram_embedder(texts)) for r in results)


def test_a_ranker_fitted_again_through_the_cache_encodes_nothing_and_ranks_alike(tmp_path):
    outputs, references, inputs = code_items(12, seed=0, members=("a", "b", "c"))
    rankings = []
    encoders = []
    for _ in range(2):
        encoder = CountingEncoder()
        ranker = STRATEGIES.get("pair_ranker")(
            {"candidate": "text"}, embedder=CachedEmbedder(encoder, tmp_path / "v.sqlite3", fingerprint="t")
        )
        ranker.fit(outputs[:8], references[:8], dev_inputs=inputs[:8])
        rankings.append(
            [ranker.combine(o, item_input=i).details["ranking"] for o, i in zip(outputs[8:], inputs[8:], strict=True)]
        )
        encoders.append(encoder)
    assert len(encoders[0].seen) > 0
    assert encoders[1].seen == []
    assert rankings[0] == rankings[1]


def test_an_embedder_without_a_fingerprint_needs_one_given(tmp_path):
    with pytest.raises(EnsembleError, match="a cached encoder needs a fingerprint"):
        CachedEmbedder(trigram_embedder, tmp_path / "v.sqlite3")(["hello"])


def test_the_minilm_fingerprint_follows_its_files_and_its_length_limit(tmp_path, minilm_dir):
    copy = tmp_path / "minilm"
    shutil.copytree(minilm_dir, copy)
    assert MiniLMEmbedder(copy).fingerprint() == MiniLMEmbedder(minilm_dir).fingerprint()
    assert MiniLMEmbedder(copy, max_length=128).fingerprint() != MiniLMEmbedder(copy).fingerprint()
    (copy / "vocab.txt").write_text((copy / "vocab.txt").read_text() + "extra\n")
    assert MiniLMEmbedder(copy).fingerprint() != MiniLMEmbedder(minilm_dir).fingerprint()
    with pytest.raises(EnsembleError, match="expected a directory with model.safetensors"):
        MiniLMEmbedder(tmp_path / "missing").fingerprint()
