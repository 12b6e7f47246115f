"""What a merge needs its members to agree on, read from their configs and tokenizers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensembles.errors import EnsembleError
from ensembles.merging.recipe import MergeRecipe


class MergeError(EnsembleError, ValueError):
    """A recipe cannot be merged as given; the message names the members and what differs."""


# Config fields that fix the shape of the weights: members that differ in one cannot be mixed.
SHAPE_FIELDS = (
    ("hidden_size", "hidden size"),
    ("intermediate_size", "intermediate size"),
    ("num_attention_heads", "attention heads"),
    ("num_key_value_heads", "key/value heads"),
)


@dataclass(frozen=True)
class MemberInfo:
    """One member as a merge sees it: architecture, shapes and vocabulary."""

    name: str
    model_type: str
    architecture: str | None
    num_layers: int | None
    vocab_size: int | None  # rows of the embedding matrix
    shapes: tuple[tuple[str, int | None], ...] = ()
    tokenizer_size: int | None = None  # tokens the tokenizer knows, special ones included
    tokenizer_hash: str | None = None  # SHA-256 of its token -> id map
    # What the weights are (a backend's fingerprint) and where they are read from: two members
    # equal in either are one model twice, which mergekit refuses as duplicate inputs.
    fingerprint: str | None = None
    location: str | None = None

    @classmethod
    def from_config(
        cls,
        name: str,
        config: Mapping[str, Any],
        *,
        tokenizer_size: int | None = None,
        tokenizer_hash: str | None = None,
    ) -> MemberInfo:
        """From a transformers config (``config.json`` as a dict)."""
        # Multimodal configs (gemma 3) keep the language model's sizes in text_config.
        text = config.get("text_config") or config
        architectures = config.get("architectures") or []
        return cls(
            name=name,
            model_type=str(config.get("model_type", "")),
            architecture=architectures[0] if architectures else None,
            num_layers=text.get("num_hidden_layers"),
            vocab_size=text.get("vocab_size"),
            shapes=tuple((key, text.get(key)) for key, _ in SHAPE_FIELDS),
            tokenizer_size=tokenizer_size,
            tokenizer_hash=tokenizer_hash,
        )


def describe_directory(name: str, directory: Path) -> MemberInfo:
    """Read a model directory's ``config.json`` and tokenizer (``tokenizer.json`` or ``tokenizer.model``)."""
    config_path = directory / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise MergeError(f"member {name!r}: cannot read {config_path}: {exc}") from None
    size, digest = _tokenizer_identity(directory)
    return MemberInfo.from_config(name, config, tokenizer_size=size, tokenizer_hash=digest)


def _tokenizer_identity(directory: Path) -> tuple[int | None, str | None]:
    fast = directory / "tokenizer.json"
    if fast.exists():
        data = json.loads(fast.read_text())
        vocab = data.get("model", {}).get("vocab") or {}
        # BPE and WordLevel map token -> id; Unigram lists [token, score] in id order.
        ids = dict(vocab) if isinstance(vocab, dict) else {entry[0]: i for i, entry in enumerate(vocab)}
        for added in data.get("added_tokens") or []:
            ids[added["content"]] = added["id"]
        canonical = json.dumps(sorted(ids.items(), key=lambda kv: (kv[1], kv[0])), ensure_ascii=False)
        return len(ids), hashlib.sha256(canonical.encode()).hexdigest()
    sentencepiece = directory / "tokenizer.model"
    if sentencepiece.exists():
        return None, hashlib.sha256(sentencepiece.read_bytes()).hexdigest()
    return None, None


def check_members(recipe: MergeRecipe, members: Mapping[str, MemberInfo]) -> None:
    """Refuse a recipe whose members cannot be merged, naming what differs and between whom.

    Members missing from ``members`` (not readable yet, such as a merge still being built) are
    left for the check made again when the merge runs.
    """
    known = [members[name] for name in recipe.entry_names() if name in members]
    if not known:
        return
    if not recipe.is_slices:  # stacking slices of one model's layers is what frankenmerges do
        _distinct(known)
    ref = members.get(recipe.base_entry() or "") or known[0]
    for other in known:
        if other is ref:
            continue
        _same(ref, other, "architecture", _architecture(ref, other))
        for (_, label), (_, a), (_, b) in zip(SHAPE_FIELDS, ref.shapes, other.shapes, strict=True):
            _same(ref, other, label, (a, b))
        if not recipe.is_slices:  # slices stack layers, so their members may have any count
            _same(ref, other, "layer count", (ref.num_layers, other.num_layers))
        _same(ref, other, "vocabulary size", (ref.vocab_size, other.vocab_size))
        _same(ref, other, "tokenizer vocabulary size", (ref.tokenizer_size, other.tokenizer_size))
        _same(ref, other, "tokenizer (vocabulary hash)", (ref.tokenizer_hash, other.tokenizer_hash))
    if recipe.is_slices:
        for member in recipe.members:
            info = members.get(member.entry)
            if info and member.layer_range and info.num_layers and member.layer_range[1] > info.num_layers:
                raise MergeError(
                    f"layer_range {list(member.layer_range)} of {member.entry!r} goes past its {info.num_layers} layers"
                )


def _distinct(known: list[MemberInfo]) -> None:
    for i, a in enumerate(known):
        for b in known[i + 1 :]:
            if a.fingerprint and a.fingerprint == b.fingerprint:
                raise MergeError(
                    f"{a.name} and {b.name} are the same weights (fingerprint {a.fingerprint[:19]}…); "
                    "a merge needs different models"
                )
            if a.location and a.location == b.location:
                raise MergeError(
                    f"{a.name} and {b.name} are the same weights (both read {a.location}); a merge needs different models"
                )


def _architecture(a: MemberInfo, b: MemberInfo) -> tuple[str | None, str | None]:
    # A GGUF read without exporting it names only its model type; compare classes where both have one.
    if a.architecture and b.architecture:
        return a.architecture, b.architecture
    return a.model_type or None, b.model_type or None


def _same(a: MemberInfo, b: MemberInfo, what: str, values: tuple[Any, Any]) -> None:
    left, right = values
    if left is None or right is None or left == right:
        return
    if what.startswith("tokenizer ("):
        left, right = left[:12], right[:12]
    raise MergeError(f"{what} differs: {a.name!r} has {left}, {b.name!r} has {right}")
