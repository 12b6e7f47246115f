"""Registering entries and blends, and building a backend for an entry."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from pydantic import ValidationError as PydanticError

from arena.registry import secrets
from arena.registry.models import MODEL_KINDS, BlendMember, Entry, Kind
from arena.teams.models import Team
from ensembles.backends import Backend, BackendError, BackendOptions, make_backend
from ensembles.errors import EnsembleError
from ensembles.merging import MergeRecipe
from ensembles.strategies import make_strategy

MAX_BLEND_MEMBERS = 16


def backend_options() -> BackendOptions:
    return BackendOptions(model_roots=tuple(settings.ARENA_MODEL_ROOTS), cache_dir=settings.CACHE_DIR / "models")


def _pydantic_message(exc: PydanticError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors())


def _check_name(team: Team, name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "an entry needs a name"})
    if len(name) > 100:
        raise ValidationError({"name": "names are at most 100 characters"})
    if Entry.objects.filter(team=team, name=name).exists():
        raise ValidationError({"name": f"{team.name} already has an entry named {name!r}"})
    return name


def register_model(
    team: Team,
    *,
    name: str,
    kind: str,
    config: dict[str, Any],
    api_key: str = "",
    user=None,
    description: str = "",
) -> Entry:
    """Validate and store a model entry; nothing is stored when anything is wrong."""
    name = _check_name(team, name)
    if kind not in MODEL_KINDS:
        raise ValidationError({"kind": f"kind must be one of {', '.join(MODEL_KINDS)}"})
    if not isinstance(config, dict):
        raise ValidationError({"config": "config must be an object"})
    if kind == Kind.MERGE:
        config = _validate_recipe(team, config)
    else:
        if "api_key" in config:
            raise ValidationError({"config": "pass the API key separately; it is stored encrypted"})
        backend_config = dict(config)
        if kind == Kind.OPENAI and api_key:
            backend_config["api_key"] = api_key
        try:
            backend = make_backend(kind, backend_config, options=backend_options())
            backend.check()
        except (EnsembleError, BackendError) as exc:
            raise ValidationError({"config": str(exc)}) from None
        config = backend.config.model_dump(mode="json", exclude={"api_key"})
    try:
        with transaction.atomic():
            return Entry.objects.create(
                team=team,
                name=name,
                kind=kind,
                config=config,
                description=description,
                secret=secrets.encrypt(api_key) if kind == Kind.OPENAI else "",
                created_by=user,
            )
    except IntegrityError:
        raise ValidationError({"name": f"{team.name} already has an entry named {name!r}"}) from None


def _validate_recipe(team: Team, config: dict[str, Any]) -> dict[str, Any]:
    try:
        recipe = MergeRecipe.model_validate(config)
    except PydanticError as exc:
        raise ValidationError({"config": _pydantic_message(exc)}) from None
    names = recipe.entry_names()
    found = {e.name: e for e in Entry.objects.filter(team=team, name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise ValidationError({"config": f"unknown entries in the recipe: {', '.join(missing)}"})
    not_local = [n for n in names if found[n].kind not in (Kind.HF, Kind.GGUF, Kind.MERGE)]
    if not_local:
        raise ValidationError({"config": f"only local weights can be merged, not {', '.join(not_local)}"})
    return recipe.model_dump(mode="json", exclude_none=True)


def register_blend(
    team: Team,
    *,
    name: str,
    strategy: str,
    params: dict[str, Any] | None,
    members: list[str],
    user=None,
    description: str = "",
) -> Entry:
    """Validate and store a blend of existing entries of the same team."""
    name = _check_name(team, name)
    try:
        make_strategy(strategy, params or {})
    except EnsembleError as exc:
        raise ValidationError({"strategy" if isinstance(exc, KeyError) else "params": str(exc)}) from None
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise ValidationError({"members": "members must be a list of entry names"})
    if len(members) < 2:
        raise ValidationError({"members": "a blend needs at least 2 members"})
    if len(members) > MAX_BLEND_MEMBERS:
        raise ValidationError({"members": f"a blend has at most {MAX_BLEND_MEMBERS} members"})
    if len(set(members)) != len(members):
        raise ValidationError({"members": "a member appears twice"})
    found = {e.name: e for e in Entry.objects.filter(team=team, name__in=members)}
    missing = [m for m in members if m not in found]
    if missing:
        raise ValidationError({"members": f"unknown entries: {', '.join(missing)}"})
    nested = [m for m in members if found[m].is_blend]
    if nested:
        raise ValidationError({"members": f"blends cannot be members yet: {', '.join(nested)}"})
    with transaction.atomic():
        blend = Entry.objects.create(
            team=team,
            name=name,
            kind=Kind.BLEND,
            strategy=strategy,
            params=params or {},
            description=description,
            created_by=user,
        )
        BlendMember.objects.bulk_create(
            BlendMember(blend=blend, member=found[m], position=i) for i, m in enumerate(members)
        )
    return blend


def backend_for(entry: Entry) -> Backend:
    """The backend that computes ``entry``'s outputs (model entries only)."""
    if entry.kind == Kind.MERGE:
        raise BackendError("this merge recipe has not been materialized into weights yet")
    if entry.kind not in (Kind.HF, Kind.GGUF, Kind.OPENAI):
        raise BackendError(f"{entry.kind} entries have no backend")
    config = dict(entry.config)
    if entry.kind == Kind.OPENAI:
        config["api_key"] = secrets.decrypt(entry.secret)
    return make_backend(entry.kind, config, options=backend_options())
