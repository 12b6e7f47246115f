"""The registration form's guidance: each kind's help and example, the local models found to pick from,
and the config that the form's path and JSON fields add up to (then registered as the API registers it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from arena.registry.backends import allowed_roots, found_models
from arena.registry.models import Kind
from arena.teams.models import Team


@dataclass(frozen=True)
class Guide:
    kind: str
    label: str
    help: str
    example: str  # the config field's JSON
    local: bool = False  # the path field applies


GUIDES = [
    Guide(
        Kind.HF,
        Kind.HF.label,
        "A folder holding config.json, *.safetensors weights and the tokenizer files, in one of the allowed "
        "folders below (pick it from the list). Registering reads its config, never its weights: an encoder "
        "(an embedding model such as all-MiniLM) or a cut-short file is refused here rather than in a run. "
        "Pickle weights (.bin, .pt) are refused, since loading them can run code.",
        '{"chat_template": "auto", "batch_size": 8}',
        local=True,
    ),
    Guide(
        Kind.GGUF,
        Kind.GGUF.label,
        "A single .gguf file (llama.cpp's format) in one of the allowed folders. Registering reads its header; "
        "the first run dequantizes it once into the cache (a minute or two on a CPU).",
        '{"chat_template": "auto"}',
        local=True,
    ),
    Guide(
        Kind.OPENAI,
        Kind.OPENAI.label,
        "Any server that speaks /v1/chat/completions (vLLM, TGI, Ollama, llama.cpp's server, a hosted API). "
        "Registering sends it one request for one token, through the arena's outbound rules, and refuses "
        "the endpoint with the status it answered. Put the key in the API key field: it is stored encrypted.",
        '{"base_url": "http://127.0.0.1:8000/v1", "model": "Qwen/Qwen2.5-0.5B-Instruct"}',
    ),
    Guide(
        Kind.MERGE,
        Kind.MERGE.label,
        "Weights merged by mergekit from entries of this team that hold local weights (folders, GGUF files, "
        "other merges of the same architecture). They are built on the gpu queue once registered; the entry "
        "runs once they are.",
        '{"method": "linear", "members": [{"entry": "model-a", "weight": 0.5}, {"entry": "model-b", "weight": 0.5}]}',
    ),
]
BLEND_GUIDE = Guide(
    Kind.BLEND,
    Kind.BLEND.label,
    "Combines the answers of entries already registered (models or other blends) by a strategy: a vote, "
    "a learned weighting or router, a judge, a cascade. Parameters are the strategy's own, as JSON; "
    "this example is majority vote's.",
    '{"tie_break": "shortest"}',
)


def model_form_context(team: Team) -> dict[str, Any]:
    """What the registration form shows: each kind's guide, the models found, the folders searched."""
    return {
        "model_kinds": GUIDES,
        "blend_guide": BLEND_GUIDE,
        "found_models": found_models(team.pk),
        "model_roots": [str(root) for root in allowed_roots(team.pk)],
    }


def with_path(kind: str, config: Any, path: str) -> Any:
    """The config with the path picked from the list (or typed) added; the config alone when none was."""
    path = path.strip()
    if not path:
        return config
    if kind not in (Kind.HF, Kind.GGUF):
        raise ValidationError({"path": f"a path is for folder and GGUF models; a {kind} entry has none"})
    if not isinstance(config, dict):
        return config  # the service says what is wrong with it
    if config.get("path") not in (None, "", path):
        raise ValidationError({"path": "give the path once: in the path field or in the config, not both"})
    return {**config, "path": path}
