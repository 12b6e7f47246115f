"""Fixtures shared by every test: three personas and their team, a real worker, a tiny model and its variants."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis
from django.conf import settings

from arena.teams.models import ApiToken, Role
from tests.factories import TeamFactory, UserFactory
from tests.helpers import WorkerProcess
from tests.loopback import LoopbackServer


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A pico llama with random weights and a word-level tokenizer, saved as safetensors."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<pad>", "Question:", "Answer:", "What", "is", "+", "-", "?", "\n"]
    words += [str(i) for i in range(200)]
    vocab = {word: i for i, word in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins tokens with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_variant(tiny_llama_dir):
    """tiny_variant(target, seed): a copy of the tiny llama with other random weights (another member) at ``target``."""

    def make(target: Path, seed: int) -> Path:
        import torch
        from transformers import LlamaForCausalLM

        shutil.copytree(tiny_llama_dir, target)
        model = LlamaForCausalLM.from_pretrained(tiny_llama_dir)
        torch.manual_seed(seed)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.5)
        model.save_pretrained(target, safe_serialization=True)
        return target

    return make


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Tests without a database first, then database tests, then transactional ones; slow ones first in each.

    pytest-django runs transactional tests after the others because their flush empties what migrations
    stored, and the order within each group is free. Starting the longest tests first keeps every xdist
    worker busy to the end: `make test` hands tests out in this order, two at a time.
    """

    def rank(item) -> tuple[int, bool]:
        marker, fixtures = item.get_closest_marker("django_db"), set(item.fixturenames)
        if marker and (marker.kwargs.get("transaction") or marker.kwargs.get("reset_sequences")):
            group = 2
        elif {"transactional_db", "live_server"} & fixtures:
            group = 2
        elif marker or "db" in fixtures:
            group = 1
        else:
            group = 0
        return group, not item.get_closest_marker("slow")

    items.sort(key=rank)  # stable: the order within a rank stays as it was


# --- Personas: a team's owner, a member and a viewer, and an outsider who owns another team ------------


@pytest.fixture
def owner():
    return UserFactory(username="olivia")


@pytest.fixture
def teammate():
    return UserFactory(username="tom")


@pytest.fixture
def viewer():
    return UserFactory(username="vera")


@pytest.fixture
def outsider():
    return UserFactory(username="oscar")


@pytest.fixture
def team(owner, teammate, viewer, outsider):
    """The red team (owner, teammate, viewer); the outsider owns the blue team."""
    red = TeamFactory(
        name="Red team", slug="red", members={owner: Role.OWNER, teammate: Role.MEMBER, viewer: Role.VIEWER}
    )
    TeamFactory(name="Blue team", slug="blue", members={outsider: Role.OWNER})
    return red


@pytest.fixture
def token(team) -> str:
    """A member-role API token of the red team."""
    return ApiToken.issue(team, "ci")[1]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # PBKDF2's deliberate slowness costs seconds per test and proves nothing here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- Redis and a real worker ------------------------------------------------------------------------


@pytest.fixture
def clean_redis():
    """The test Redis database (this xdist worker's own), emptied before and after."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"these tests need Redis at {settings.REDIS_URL} (make test starts none; .ci/run does)")
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def worker_roots(settings, tmp_path_factory) -> list[Path]:
    """Model roots the worker accepts: the configured ones and the tests' temporary folders."""
    return [*settings.ARENA_MODEL_ROOTS, tmp_path_factory.getbasetemp()]


@pytest.fixture
def worker(transactional_db, clean_redis, worker_roots):
    process = WorkerProcess(worker_roots).start()
    yield process
    process.stop()


@pytest.fixture
def serve():
    """Start loopback HTTP servers (tests/loopback.py) that the test's outbound calls reach; closed after it."""
    servers: list[LoopbackServer] = []

    def start(**kwargs) -> LoopbackServer:
        servers.append(LoopbackServer(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
