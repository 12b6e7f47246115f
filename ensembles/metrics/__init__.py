"""Answer extraction and scoring metrics."""

from ensembles.metrics.base import METRICS, Metric, get_metric
from ensembles.metrics.extract import EXTRACTORS, extract, normalize_text

__all__ = ["EXTRACTORS", "METRICS", "Metric", "extract", "get_metric", "normalize_text"]
