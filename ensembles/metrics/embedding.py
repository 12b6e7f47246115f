"""Embedding similarity: cosine of mean-pooled sentence embeddings from a local encoder.

The encoder is a sentence-transformers model directory (e.g. all-MiniLM-L6-v2) read with
``transformers`` from disk only; it is loaded on first use from the path given to
``configure_embedding_model`` or, failing that, the ``ARENA_EMBEDDING_MODEL`` variable.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ensembles.errors import EnsembleError
from ensembles.metrics.base import METRICS, Metric

ENV_VAR = "ARENA_EMBEDDING_MODEL"
_BATCH_SIZE = 64
# Texts seen recently (references above all) are not encoded twice; 384 floats each.
_CACHE_SIZE = 8192
_DEFAULT_MAX_TOKENS = 256

_configured_path: Path | None = None
_encoder: _Encoder | None = None
_lock = threading.Lock()


class EmbeddingModelError(EnsembleError, RuntimeError):
    """No embedding model is configured, or the configured directory cannot be loaded."""


def configure_embedding_model(path: str | os.PathLike[str] | None) -> None:
    """Use the sentence-transformers directory at ``path``; None falls back to $ARENA_EMBEDDING_MODEL.

    The model is loaded lazily, on the first score.
    """
    global _configured_path, _encoder
    with _lock:
        _configured_path = None if path is None else Path(path)
        _encoder = None


def embedding_model_path() -> Path | None:
    """The directory the encoder will be loaded from, or None when none is configured."""
    if _configured_path is not None:
        return _configured_path
    from_env = os.environ.get(ENV_VAR, "").strip()
    return Path(from_env) if from_env else None


class _Encoder:
    """A transformer encoder with sentence-transformers' mean pooling and L2 normalisation."""

    def __init__(self, path: Path) -> None:
        # Imported here: torch and transformers take seconds to import and most runs never embed.
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.max_tokens = _max_seq_length(path)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        # Batches of similar length waste less compute on padding; rows go back in order below.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = []
        for start in range(0, len(texts), _BATCH_SIZE):
            batch = self.tokenizer(
                [texts[i] for i in order[start : start + _BATCH_SIZE]],
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            # Mean over real tokens (special tokens included, padding excluded), as sentence-transformers does.
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            chunks.append(pooled.float().numpy())
        vectors = np.empty((len(texts), chunks[0].shape[1]), dtype=np.float32)
        vectors[order] = np.concatenate(chunks)
        return vectors

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text; repeated texts are encoded once."""
        missing = list(dict.fromkeys(text for text in texts if text not in self._cache))
        if missing:
            for text, vector in zip(missing, self._encode_uncached(missing), strict=True):
                self._cache[text] = vector
                if len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
        rows = []
        for text in texts:
            vector = self._cache.get(text)
            if vector is None:  # evicted while this call filled the cache
                vector = self._encode_uncached([text])[0]
            rows.append(vector)
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)


def _max_seq_length(path: Path) -> int:
    """The model's max_seq_length from sentence_bert_config.json, else a safe default."""
    config = path / "sentence_bert_config.json"
    try:
        data: Any = json.loads(config.read_text(encoding="utf-8"))
        return int(data["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return _DEFAULT_MAX_TOKENS


def get_encoder() -> _Encoder:
    """The loaded encoder, loading it on first use; raises EmbeddingModelError when unavailable."""
    global _encoder
    with _lock:
        if _encoder is None:
            path = embedding_model_path()
            if path is None:
                raise EmbeddingModelError(
                    f"no embedding model configured: call configure_embedding_model(path) or set {ENV_VAR}"
                )
            if not path.is_dir():
                raise EmbeddingModelError(f"embedding model directory {str(path)!r} does not exist")
            try:
                _encoder = _Encoder(path)
            except (OSError, ValueError) as exc:
                raise EmbeddingModelError(f"cannot load embedding model from {str(path)!r}: {exc}") from exc
        return _encoder


@METRICS.register(
    "embedding_similarity",
    pretty_name="Embedding similarity",
    reference_url="https://arxiv.org/abs/1904.09675",
)
class EmbeddingSimilarity(Metric):
    """Cosine similarity of mean-pooled sentence embeddings, negative values clipped to 0.

    BERTScore-like but coarser: one vector per text rather than greedy token matching.
    """

    def score(self, prediction: str, reference: str) -> float:
        return self.score_batch([prediction], [reference])[0]

    def score_batch(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
        scores = [0.0] * len(predictions)
        to_embed: list[int] = []
        for i, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
            blank_pred, blank_ref = not prediction.strip(), not reference.strip()
            if blank_pred or blank_ref:
                # Blank text has no meaning to compare; same convention as the other metrics.
                scores[i] = float(blank_pred and blank_ref)
            elif prediction == reference:
                scores[i] = 1.0  # exactly, rather than a float32 cosine of 0.99999994
            else:
                to_embed.append(i)
        if to_embed:
            vectors = get_encoder().encode([predictions[i] for i in to_embed] + [references[i] for i in to_embed])
            pred_vectors, ref_vectors = vectors[: len(to_embed)], vectors[len(to_embed) :]
            cosines = np.clip(np.einsum("ij,ij->i", pred_vectors, ref_vectors), 0.0, 1.0)
            for i, cosine in zip(to_embed, cosines, strict=True):
                scores[i] = float(cosine)
        return scores
