"""Fixtures shared by every test: three personas, a CSRF-enforcing client, a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A pico llama with random weights and a word-level tokenizer, saved as safetensors."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<pad>", "Question:", "Answer:", "What", "is", "+", "-", "?", "\n"]
    words += [str(i) for i in range(200)]
    vocab = {w: i for i, w in enumerate(words)}
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


def make_tiny_variant(source: Path, target: Path, seed: int) -> Path:
    """A copy of the tiny llama with other random weights: a different member."""
    import shutil

    import torch
    from transformers import LlamaForCausalLM

    shutil.copytree(source, target)
    model = LlamaForCausalLM.from_pretrained(source)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(target, safe_serialization=True)
    return target


def read_json(response) -> dict:
    return json.loads(response.content)
