"""Text encoders that strategies use to look at an item's input."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ensembles.errors import EnsembleError


class Embedder(Protocol):
    """Maps texts to one vector each: an array of shape (len(texts), dim)."""

    def __call__(self, texts: list[str]) -> np.ndarray: ...


def embed_checked(embedder: Embedder, texts: list[str], who: str) -> np.ndarray:
    """``embedder``'s vectors for ``texts`` as float64, refusing any shape but one row per text."""
    vectors = np.asarray(embedder(texts), dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise EnsembleError(
            f"{who}: the embedder returned shape {vectors.shape} for {len(texts)} texts; expected one row per text"
        )
    return vectors


class MiniLMEmbedder:
    """A local sentence-transformers model (e.g. all-MiniLM-L6-v2) run with plain transformers.

    Mean-pools the last hidden states over real tokens and L2-normalizes, as the
    sentence-transformers pipeline of those models does. Loads safetensors weights only,
    never remote code, and only on the first call.
    """

    def __init__(self, path: str | Path, *, device: str = "cpu", batch_size: int = 32, max_length: int = 256) -> None:
        # CPU by default: a 22M-parameter encoder is fast there and leaves the GPU to the members.
        self.path = Path(path)
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.model: Any = None
        self.tokenizer: Any = None

    def load(self) -> None:
        """Read tokenizer and weights from the directory."""
        if not (self.path / "model.safetensors").is_file():
            raise EnsembleError(f"no sentence encoder at {self.path}: expected a directory with model.safetensors")
        # Imported here so that the library imports without loading torch.
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=False, local_files_only=True)
            model = AutoModel.from_pretrained(
                self.path, trust_remote_code=False, use_safetensors=True, local_files_only=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise EnsembleError(f"could not load the sentence encoder at {self.path}: {exc}") from exc
        self.model = model.to(self.device).eval()

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        if self.model is None:
            self.load()
        chunks = [np.zeros((0, self.model.config.hidden_size), dtype=np.float32)]
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        return np.concatenate(chunks)
