"""The backend that runs an entry, and where the weights the arena builds itself are kept.

Every path that runs a model entry (a run's batches, judging, serving, merging and fine-tuning its
weights) builds its backend here. A merge entry runs like an hf entry once materialized: a
transformers backend over the merged directory, so the merge itself is what runs and what the
leaderboard ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

from arena.registry import secrets
from arena.registry.models import Entry, Kind, Materialization, MergeState
from arena.teams.models import Team
from ensembles.backends import Backend, BackendError, BackendOptions, make_backend


def backend_options() -> BackendOptions:
    # Models the arena made itself (merges, fine-tunes) are read from where it wrote them.
    roots = (*settings.ARENA_MODEL_ROOTS, settings.ARENA_BUILT_MODELS_DIR)
    return BackendOptions(model_roots=tuple(roots), cache_dir=settings.CACHE_DIR / "models")


def built_dir(team: Team) -> Path:
    """Where a team's merges and fine-tunes are written (shared by every worker, under ARENA_BUILT_MODELS_DIR)."""
    return Path(settings.ARENA_BUILT_MODELS_DIR) / team.slug


def merged_backend_config(entry: Entry) -> dict[str, Any]:
    """The hf backend config that runs a materialized merge."""
    m = Materialization.objects.filter(entry=entry).first()
    if m is None or m.state != MergeState.DONE:
        state = m.state if m else "not started"
        why = f": {m.reason}" if m and m.reason else ""
        raise BackendError(f"this merge has not been materialized into weights yet ({state}{why})")
    return {"path": m.path, "chat_template": entry.config.get("chat_template", "auto")}


def backend_for(entry: Entry) -> Backend:
    """The backend that computes ``entry``'s outputs (model entries only)."""
    if entry.kind == Kind.MERGE:
        return make_backend(Kind.HF, merged_backend_config(entry), options=backend_options())
    if entry.kind not in (Kind.HF, Kind.GGUF, Kind.OPENAI):
        raise BackendError(f"{entry.kind} entries have no backend")
    config = dict(entry.config)
    if entry.kind == Kind.OPENAI:
        config["api_key"] = secrets.decrypt(entry.secret)
    return make_backend(entry.kind, config, options=backend_options())
