"""hf entries named by a hub id pinned to a commit: read from the local Hugging Face cache, never downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ensembles.backends import BackendError, BackendOptions, DecodingParams, make_backend
from ensembles.errors import ParamsError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def cache_snapshot(cache: Path, hub_id: str, revision: str, source: Path) -> Path:
    """Lay ``source`` out as the hub cache does: models--org--name/snapshots/<commit>/."""
    snapshot = cache / f"models--{hub_id.replace('/', '--')}" / "snapshots" / revision
    shutil.copytree(source, snapshot)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, tiny_llama_dir) -> Path:
    cache = tmp_path / "hub"
    cache_snapshot(cache, "arena-test/tiny-llama", COMMIT, tiny_llama_dir)
    cache_snapshot(cache, "arena-test/tiny-llama", OTHER_COMMIT, tiny_llama_dir)
    return cache


def hub_backend(cache: Path, revision: str = COMMIT, hub_id: str = "arena-test/tiny-llama"):
    return make_backend("hf", {"hub_id": hub_id, "revision": revision}, options=BackendOptions(hub_cache=cache))


def test_a_pinned_hub_id_in_the_cache_loads_and_generates(hub_cache):
    backend = hub_backend(hub_cache)
    backend.check()
    [generation] = backend.generate(["What is 2 + 3 ?"], DecodingParams(max_new_tokens=2))
    assert generation.completion_tokens >= 1
    assert backend.safetensors_dir() == hub_cache / "models--arena-test--tiny-llama" / "snapshots" / COMMIT


def test_the_fingerprint_is_the_id_and_revision_so_another_commit_is_another_model(hub_cache):
    first, again, other = hub_backend(hub_cache), hub_backend(hub_cache), hub_backend(hub_cache, OTHER_COMMIT)
    assert first.fingerprint() == again.fingerprint()
    assert first.fingerprint() != other.fingerprint()  # same bytes, other commit: not assumed the same


def test_a_hub_id_missing_from_the_cache_says_so_and_how_to_fetch_it(hub_cache):
    backend = hub_backend(hub_cache, hub_id="arena-test/not-downloaded")
    with pytest.raises(
        BackendError, match="arena-test/not-downloaded at revision 0123.* is not in .*does not download"
    ):
        backend.check()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"hub_id": "arena-test/tiny-llama"}, "needs the 40-hex commit"),
        ({"hub_id": "arena-test/tiny-llama", "revision": "main"}, "needs the 40-hex commit"),
        ({"hub_id": "tiny-llama", "revision": COMMIT}, "must look like org/name"),
        ({"path": "/models/x", "revision": COMMIT}, "revision goes with hub_id"),
        ({"path": "/models/x", "hub_id": "arena-test/tiny-llama", "revision": COMMIT}, "one of the two"),
        ({}, "one of the two"),
    ],
)
def test_a_hub_id_needs_a_pinned_commit_and_excludes_a_path(config, message):
    with pytest.raises(ParamsError, match=message):
        make_backend("hf", config)


def test_remote_code_in_a_cached_snapshot_is_refused(tmp_path, tiny_llama_dir):
    cache = tmp_path / "hub"
    snapshot = cache_snapshot(cache, "arena-test/custom", COMMIT, tiny_llama_dir)
    config = json.loads((snapshot / "config.json").read_text())
    config["model_type"] = "custom-thing"
    config["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
    }
    (snapshot / "config.json").write_text(json.dumps(config))
    for module in ("configuration_custom.py", "modeling_custom.py"):
        (snapshot / module).write_text("raise SystemExit('remote code ran')\n")  # never imported

    with pytest.raises(BackendError, match="custom code"):
        hub_backend(cache, hub_id="arena-test/custom").load()
