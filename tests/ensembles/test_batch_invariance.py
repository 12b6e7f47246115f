"""Multiple-choice log-likelihoods do not move with the batch size or the padding side."""

from __future__ import annotations

import random
import shutil

import pytest

from ensembles.backends import BackendOptions, make_backend

BATCH_SIZES = (1, 8, 64)


@pytest.fixture(scope="module")
def tiny_gemma_dir(tiny_llama_dir, tmp_path_factory):
    """A pico Gemma 3 whose sliding window (4) is shorter than every context, with the tiny llama's tokenizer."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    out = tmp_path_factory.mktemp("models") / "tiny-gemma3"
    shutil.copytree(tiny_llama_dir, out, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=212,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    Gemma3ForCausalLM(config).save_pretrained(out, safe_serialization=True)
    return out


def items(count: int) -> list[tuple[str, list[str]]]:
    """Questions of 5 to 40 tokens, each with four options of one to three tokens."""
    rng = random.Random(0)  # noqa: S311 - reproducible test data, not secrets
    out = []
    for _ in range(count):
        terms = [str(rng.randint(0, 199)) for _ in range(rng.randint(1, 12))]
        context = "Question: What is " + " + ".join(terms) + " ? Answer:"
        options = [" " + " ".join(str(rng.randint(0, 199)) for _ in range(rng.randint(1, 3))) for _ in range(4)]
        out.append((context, options))
    return out


def one_at_a_time(backend, requests: list[tuple[str, str]]) -> list[float]:
    """Each request alone through the model's plain forward, with a full log-softmax: no batch, no padding, no cache."""
    import torch

    tok = backend.tokenizer
    out = []
    for context, continuation in requests:
        ctx = tok(context, add_special_tokens=True)["input_ids"]
        cont = tok(continuation, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = backend.model(input_ids=torch.tensor([ctx + cont])).logits[0].float()
        logprobs = torch.log_softmax(logits[len(ctx) - 1 : -1], dim=-1)
        out.append(float(logprobs.gather(1, torch.tensor(cont).unsqueeze(1)).sum()))
    return out


def pick(logliks: list[float]) -> list[int]:
    return [max(range(4), key=lambda k: logliks[i + k]) for i in range(0, len(logliks), 4)]


@pytest.mark.parametrize("model", ["llama", "gemma3"])
def test_choices_and_log_likelihoods_are_the_same_at_any_batch_size_and_padding(model, tiny_llama_dir, tiny_gemma_dir):
    directory = tiny_llama_dir if model == "llama" else tiny_gemma_dir
    backend = make_backend("hf", {"path": str(directory)}, options=BackendOptions(device="cpu"))
    backend.load()
    # 70 items: batches of 64 hold contexts of many lengths, and a second, smaller batch follows.
    requests = [(context, option) for context, options in items(70) for option in options]
    reference = one_at_a_time(backend, requests)
    for padding in ("left", "right"):
        for size in BATCH_SIZES:
            backend.config.batch_size = size
            scored = backend.loglikelihood(requests, padding=padding)
            assert scored == pytest.approx(reference, abs=1e-4), (padding, size)
            assert pick(scored) == pick(reference), (padding, size)
