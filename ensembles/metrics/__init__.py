"""Answer extraction and scoring metrics."""

from ensembles.metrics.base import METRICS, Metric, get_metric
from ensembles.metrics.code import CodePass, CodeResult, build_test_code, pass_at_k, run_tests
from ensembles.metrics.embedding import EmbeddingModelError, EmbeddingSimilarity, configure_embedding_model
from ensembles.metrics.extract import EXTRACTORS, extract, normalize_text

__all__ = [
    "EXTRACTORS",
    "METRICS",
    "CodePass",
    "CodeResult",
    "EmbeddingModelError",
    "EmbeddingSimilarity",
    "Metric",
    "build_test_code",
    "configure_embedding_model",
    "extract",
    "get_metric",
    "normalize_text",
    "pass_at_k",
    "run_tests",
]
