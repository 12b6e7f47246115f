"""Text encoders that strategies use to look at an item's input."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ensembles.backends.base import digest_json, file_sha256
from ensembles.errors import EnsembleError

# What an encoder's vectors depend on besides its weights: the tokenizer and the model's config.
ENCODER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


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

    def fingerprint(self) -> str:
        """A stable id of the vectors this encoder gives: its files' hashes, length limit and pooling."""
        if not (self.path / "model.safetensors").is_file():
            raise EnsembleError(f"no sentence encoder at {self.path}: expected a directory with model.safetensors")
        files = [self.path / name for name in ("model.safetensors", *ENCODER_FILES)]
        hashes = {f.name: _file_digest(f, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()}
        return "encoder:" + digest_json({"files": hashes, "max_length": self.max_length, "pooling": "mean, l2"})

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


@lru_cache(maxsize=64)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    # Keyed by size and modification time too: a file replaced in place is hashed again.
    return file_sha256(path)


class CachedEmbedder:
    """An Embedder whose vectors are kept by content: (encoder fingerprint, text) in a SQLite file.

    A text encoded once is never encoded again, by this process or any other that opens the same
    file (SQLite's write-ahead log lets several workers read and write it at once), so a second
    blend over the same run's answers costs lookups, not forward passes. ``encoded`` counts the
    texts actually sent to the encoder, ``reused`` those found in the file. Without a
    ``fingerprint`` the embedder's own ``fingerprint()`` is asked on the first call.
    """

    def __init__(self, embedder: Embedder, path: str | Path, fingerprint: str | None = None) -> None:
        self.embedder = embedder
        self.path = Path(path)
        self._fingerprint = fingerprint
        self.encoded = 0
        self.reused = 0

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            ask = getattr(self.embedder, "fingerprint", None)
            if ask is None:
                raise EnsembleError("a cached encoder needs a fingerprint: pass one, or an embedder with fingerprint()")
            self._fingerprint = str(ask())
        return self._fingerprint

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        return db

    def __call__(self, texts: list[str]) -> np.ndarray:
        keys = [digest_json({"encoder": self.fingerprint, "text": text}) for text in texts]
        with closing(self._connect()) as db:
            found: dict[str, np.ndarray] = {}
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), 500):  # under SQLite's limit on bound parameters
                chunk = unique[start : start + 500]
                rows = db.execute(
                    f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})",  # noqa: S608 - placeholders only
                    chunk,
                )
                found.update((key, np.frombuffer(blob, dtype=np.float64)) for key, blob in rows)
            missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
            self.reused += len(set(keys) - set(missing))
            if missing:
                vectors = embed_checked(self.embedder, list(missing.values()), "encoder")
                self.encoded += len(missing)
                with db:
                    db.executemany(
                        "INSERT OR IGNORE INTO vectors (key, vector) VALUES (?, ?)",
                        [(k, v.tobytes()) for k, v in zip(missing, vectors, strict=True)],
                    )
                found.update(zip(missing, vectors, strict=True))
        if not keys:
            return np.zeros((0, 0))
        return np.stack([found[k] for k in keys])
