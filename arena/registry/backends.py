"""The backend that runs an entry, and where the weights the arena builds itself are kept.

Every path that runs a model entry (a run's batches, judging, serving, merging and fine-tuning its
weights) builds its backend here. A merge entry runs like an hf entry once materialized: a
transformers backend over the merged directory, so the merge itself is what runs and what the
leaderboard ranks.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from arena.core.outbound import outbound_policy
from arena.registry import secrets
from arena.registry.models import Entry, Kind, Materialization, MergeState
from ensembles.backends import Backend, BackendError, BackendOptions, make_backend


def built_dir(team_id: int) -> Path:
    """The team's own folder for what the arena builds for it (merges, fine-tunes), under ARENA_BUILT_MODELS_DIR.

    Named by the team's id, which is never reused nor renamed as a slug can be: a new team
    never inherits a deleted one's files, and a renamed team keeps its own.
    """
    return Path(settings.ARENA_BUILT_MODELS_DIR) / str(team_id)


def backend_options(team_id: int | None = None) -> BackendOptions:
    """Where a team's backends read weights: the shared model roots and what the arena built for that team alone."""
    roots = [*settings.ARENA_MODEL_ROOTS]
    if team_id is not None:
        roots.append(built_dir(team_id))
    return BackendOptions(model_roots=tuple(roots), cache_dir=settings.CACHE_DIR / "models", outbound=outbound_policy())


# NUL makes the OS calls fail, and no control character (line breaks and tabs included) belongs in
# a model's file name shown back on a page or in a log line.
_PATH_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_model_path(team_id: int, path: str) -> Path:
    """Resolve a local model path (symlinks, ``..``), then refuse it unless it lies in a shared model root
    or the team's own built folder.

    The folders of what the arena built are every team's but one's to keep out of, even should an
    operator set ARENA_BUILT_MODELS_DIR inside a shared root. A path that does not exist and one
    that is not the team's get the same message, so that a refusal says nothing of other teams' files.
    """
    if match := _PATH_CONTROL.search(path):
        what = "a NUL character" if match.group() == "\x00" else "a control character"
        raise BackendError(f"path: contains {what} (U+{ord(match.group()):04X}); a model path holds none")
    own = built_dir(team_id).resolve()
    built = Path(settings.ARENA_BUILT_MODELS_DIR).resolve()
    shared = [Path(root).expanduser().resolve() for root in settings.ARENA_MODEL_ROOTS]
    try:
        resolved = Path(path).expanduser().resolve()
        allowed = resolved.is_relative_to(own) or (
            not resolved.is_relative_to(built) and any(resolved.is_relative_to(root) for root in shared)
        )
        found = allowed and resolved.exists()
    except (OSError, RuntimeError):  # unreadable, a symlink loop, an unknown ~user
        found = False
    if not found:
        roots = ", ".join(str(root) for root in (own, *shared))
        shown = path if len(path) <= 300 else f"{path[:300]}…"  # no path that long exists; no need to echo it whole
        raise BackendError(f"model path {shown!r} does not exist or is outside the allowed model roots ({roots})")
    return resolved


def allowed_roots(team_id: int) -> list[Path]:
    """Where a team's local models may lie: its own built folder first, then the shared model roots."""
    return [built_dir(team_id), *(Path(root).expanduser() for root in settings.ARENA_MODEL_ROOTS)]


@dataclass(frozen=True)
class FoundModel:
    kind: str  # hf or gguf
    path: str
    label: str  # the path under its root


# The registration form lists what it finds this deep, and this many, so that a root holding a whole
# hub cache or a data disk still renders at once.
FIND_DEPTH = 4
FIND_MOST = 200


def found_models(team_id: int) -> list[FoundModel]:
    """The model folders (a config.json beside *.safetensors) and .gguf files under the team's allowed roots.

    Each passes check_model_path, so the list offers nothing registration would refuse for where it is;
    other teams' built folders are never walked, even when they lie inside a shared root.
    """
    found: dict[str, FoundModel] = {}
    built = Path(settings.ARENA_BUILT_MODELS_DIR).expanduser().resolve()
    for root in allowed_roots(team_id):
        if not root.is_dir():
            continue
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            depth = len(here.relative_to(root).parts)
            # The walk of a shared root skips every team's built folders; the team's own is walked first.
            dirs[:] = sorted(
                d for d in dirs if not d.startswith(".") and depth < FIND_DEPTH and (here / d).resolve() != built
            )
            if "config.json" in files and any(f.endswith(".safetensors") for f in files):
                dirs[:] = []  # a model folder's subfolders are its own parts
                candidates = [(Kind.HF, here)]
            else:
                candidates = [(Kind.GGUF, here / f) for f in sorted(files) if f.endswith(".gguf")]
            for kind, path in candidates:
                try:
                    check_model_path(team_id, str(path))
                except BackendError:
                    continue
                under = path.relative_to(root)
                found.setdefault(str(path), FoundModel(kind, str(path), str(under) if under.parts else path.name))
                if len(found) >= FIND_MOST:
                    return list(found.values())
    return list(found.values())


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
    options = backend_options(entry.team_id)
    if entry.kind == Kind.MERGE:
        return make_backend(Kind.HF, merged_backend_config(entry), options=options)
    if entry.kind not in (Kind.HF, Kind.GGUF, Kind.OPENAI):
        raise BackendError(f"{entry.kind} entries have no backend")
    config = dict(entry.config)
    if entry.kind == Kind.OPENAI:
        config["api_key"] = secrets.decrypt(entry.secret)
    elif isinstance(config.get("path"), str) and config["path"]:
        # Again at each use: what the path names may have become a symlink to elsewhere since it was registered.
        check_model_path(entry.team_id, config["path"])
    return make_backend(entry.kind, config, options=options)
