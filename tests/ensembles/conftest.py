"""Fixtures of the library's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

MINILM = Path(__file__).resolve().parents[2] / "data" / "test" / "models" / "all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The shipped all-MiniLM-L6-v2 that `make test` fetches; a test that needs it is skipped without it."""
    if not (MINILM / "model.safetensors").is_file():
        pytest.skip("all-MiniLM-L6-v2 is not under data/test/models")
    return MINILM
