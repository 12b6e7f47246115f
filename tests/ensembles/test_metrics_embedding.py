from pathlib import Path

import pytest

from ensembles.metrics import EmbeddingModelError, configure_embedding_model, embedding, get_metric

MODEL_DIR = Path(__file__).resolve().parents[2] / "data" / "test" / "models" / "all-MiniLM-L6-v2"
needs_model = pytest.mark.skipif(not (MODEL_DIR / "config.json").is_file(), reason=f"{MODEL_DIR} is missing")


@pytest.fixture
def unconfigured(monkeypatch):
    monkeypatch.delenv(embedding.ENV_VAR, raising=False)
    configure_embedding_model(None)
    yield
    configure_embedding_model(None)


def test_embedding_similarity_without_a_model_says_how_to_configure_one(unconfigured):
    with pytest.raises(EmbeddingModelError, match="configure_embedding_model"):
        get_metric("embedding_similarity").score("a cat", "a dog")


def test_embedding_similarity_refuses_a_missing_directory(unconfigured, tmp_path):
    configure_embedding_model(tmp_path / "nowhere")
    with pytest.raises(EmbeddingModelError, match="does not exist"):
        get_metric("embedding_similarity").score("a cat", "a dog")


def test_embedding_similarity_reads_the_directory_from_the_environment(unconfigured, monkeypatch, tmp_path):
    monkeypatch.setenv(embedding.ENV_VAR, str(tmp_path))
    assert embedding.embedding_model_path() == tmp_path
    configure_embedding_model(MODEL_DIR)
    assert embedding.embedding_model_path() == MODEL_DIR


def test_blank_and_identical_texts_need_no_model(unconfigured):
    metric = get_metric("embedding_similarity")
    assert metric.score_batch(["", " ", "same words"], ["", "x", "same words"]) == [1.0, 0.0, 1.0]


@pytest.mark.slow
@needs_model
def test_embedding_similarity_ranks_a_paraphrase_above_an_unrelated_sentence(unconfigured):
    configure_embedding_model(MODEL_DIR)
    metric = get_metric("embedding_similarity")
    paraphrase = metric.score("The cat is sitting on the mat.", "A cat sits on the mat.")
    unrelated = metric.score("The stock market fell sharply today.", "A cat sits on the mat.")
    assert 0.0 <= unrelated < 0.4 < 0.8 < paraphrase <= 1.0


@pytest.mark.slow
@needs_model
def test_embedding_similarity_batches_give_the_same_scores_as_single_calls(unconfigured):
    configure_embedding_model(MODEL_DIR)
    metric = get_metric("embedding_similarity")
    predictions = ["Paris", "the capital is Berlin", "I do not know", "Paris"]
    references = ["Paris is the capital", "Berlin", "Rome", "Paris is the capital"]
    batch = metric.score_batch(predictions, references)
    assert batch == pytest.approx([metric.score(p, r) for p, r in zip(predictions, references, strict=True)], abs=1e-5)
    assert batch[0] == batch[3]


@pytest.mark.slow
@needs_model
def test_embeddings_are_unit_length_mean_pooled_vectors(unconfigured):
    configure_embedding_model(MODEL_DIR)
    vectors = embedding.get_encoder().encode(["hello world", "a longer sentence about numbers"])
    assert vectors.shape == (2, 384)
    assert (vectors**2).sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
