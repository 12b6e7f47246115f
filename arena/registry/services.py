"""Registering entries and blends: every check made before one is stored."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from pydantic import ValidationError as PydanticError

from arena.core.states import TERMINAL
from arena.core.text import check_name
from arena.registry import merges, secrets
from arena.registry.backends import backend_options, check_model_path
from arena.registry.models import MODEL_KINDS, BlendMember, Entry, Kind, Materialization, MergeState
from arena.teams.models import Team
from ensembles.backends import BackendError, make_backend
from ensembles.errors import EnsembleError
from ensembles.merging import MergeRecipe
from ensembles.strategies import Strategy, make_strategy

MAX_BLEND_MEMBERS = 16
# Levels of blends: a blend of models is 1 deep, a blend with it as a member 2.
MAX_BLEND_DEPTH = 4


def _pydantic_message(exc: PydanticError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors())


def _check_name(team: Team, name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "an entry needs a name"})
    name = check_name("name", name)
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
    config = _model_config(team, kind, config, api_key)
    try:
        with transaction.atomic():
            entry = Entry.objects.create(
                team=team,
                name=name,
                kind=kind,
                config=config,
                description=description,
                secret=secrets.encrypt(api_key) if kind == Kind.OPENAI else "",
                created_by=user,
            )
            if kind == Kind.MERGE:
                merges.start(entry)  # materialized on a gpu queue once this commits
            return entry
    except IntegrityError:
        raise ValidationError({"name": f"{team.name} already has an entry named {name!r}"}) from None


def _model_config(team: Team, kind: str, config: dict[str, Any], api_key: str) -> dict[str, Any]:
    """The stored form of a model entry's config, after checking its file, endpoint or recipe."""
    if kind not in MODEL_KINDS:
        raise ValidationError({"kind": f"kind must be one of {', '.join(MODEL_KINDS)}"})
    if not isinstance(config, dict):
        raise ValidationError({"config": "config must be an object"})
    if kind == Kind.MERGE:
        return _validate_recipe(team, config)
    if "api_key" in config:
        raise ValidationError({"config": "pass the API key separately; it is stored encrypted"})
    backend_config = dict(config)
    if kind == Kind.OPENAI and api_key:
        backend_config["api_key"] = api_key
    try:
        if kind in (Kind.HF, Kind.GGUF) and isinstance(config.get("path"), str) and config["path"]:
            check_model_path(team.pk, config["path"])
        backend = make_backend(kind, backend_config, options=backend_options(team.pk))
        # Before anything is stored: a local model's config and headers are read (never its weights),
        # an endpoint answers one token.
        backend.probe()
    except (EnsembleError, BackendError) as exc:
        raise ValidationError({"config": str(exc)}) from None
    return backend.config.model_dump(mode="json", exclude={"api_key"})


def put_model(
    team: Team,
    *,
    name: str,
    kind: str,
    config: dict[str, Any],
    api_key: str = "",
    user=None,
    description: str | None = None,
) -> tuple[Entry, bool]:
    """Register a model entry, or point an existing one at a new checkpoint or endpoint; (entry, created).

    Earlier runs keep their results: each run entry holds the fingerprint it was computed with. The
    kind stays; an empty ``api_key`` keeps the stored key, and no ``description`` the stored one.
    Refused while the entry is in a run that has not finished, whose remaining batches would
    otherwise load the new weights.
    """
    name = (name or "").strip()
    entry = Entry.objects.filter(team=team, name=name).first()
    if entry is None:
        return register_model(
            team, name=name, kind=kind, config=config, api_key=api_key, user=user, description=description or ""
        ), True
    if entry.is_blend:
        raise ValidationError({"name": f"{name!r} is a blend; only model entries can be changed here"})
    if kind != entry.kind:
        raise ValidationError({"kind": f"{name!r} is a {entry.kind} entry; register a {kind} model under a new name"})
    if kind == Kind.MERGE and _merges_into(team, config, name):
        raise ValidationError({"config": f"the recipe would contain {name!r} itself"})
    key = api_key or (secrets.decrypt(entry.secret) if entry.secret else "")
    config = _model_config(team, kind, config, key)
    with transaction.atomic():
        entry = Entry.objects.select_for_update().get(pk=entry.pk)
        # A run entry has finished once done or failed, as a run has.
        busy = sorted(set(entry.run_entries.exclude(state__in=TERMINAL).values_list("run_id", flat=True)))
        if busy:
            runs = ", ".join(str(pk) for pk in busy)
            raise ValidationError({"name": f"{name!r} is in unfinished run {runs}; change it once that has finished"})
        rebuild = kind == Kind.MERGE and config != entry.config
        entry.config = config
        if description is not None:
            entry.description = description
        if api_key:
            entry.secret = secrets.encrypt(api_key)
        entry.save(update_fields=["config", "description", "secret"])
        if rebuild:
            merges.start(entry)  # a changed recipe is built again, into a directory of its own
    return entry, False


def _merges_into(team: Team, config: dict[str, Any], name: str) -> bool:
    """Whether a recipe names ``name``, directly or through the recipes of the merges it names."""
    try:
        frontier = set(MergeRecipe.model_validate(config).entry_names())
    except PydanticError:
        return False  # _validate_recipe reports what is wrong with it
    seen: set[str] = set()
    while frontier:
        if name in frontier:
            return True
        seen |= frontier
        nested: set[str] = set()
        for recipe in Entry.objects.filter(team=team, name__in=frontier, kind=Kind.MERGE).values_list(
            "config", flat=True
        ):
            nested |= set(MergeRecipe.model_validate(recipe).entry_names())
        frontier = nested - seen
    return False


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
    merges.check_recipe_members(recipe, found)
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
        combiner = make_strategy(strategy, params or {})
    except EnsembleError as exc:
        raise ValidationError({"strategy" if isinstance(exc, KeyError) else "params": str(exc)}) from None
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise ValidationError({"members": "members must be a list of entry names"})
    least, most = combiner.min_members, combiner.max_members
    if len(members) < least:
        raise ValidationError({"members": f"a blend needs at least {least} member{'s' if least > 1 else ''}"})
    if most is not None and len(members) > most:
        raise ValidationError({"members": f"{strategy} takes at most {most} member{'s' if most > 1 else ''}"})
    if len(members) > MAX_BLEND_MEMBERS:
        raise ValidationError({"members": f"a blend has at most {MAX_BLEND_MEMBERS} members"})
    if len(set(members)) != len(members):
        raise ValidationError({"members": "a member appears twice"})
    found = {e.name: e for e in Entry.objects.filter(team=team, name__in=members)}
    missing = [m for m in members if m not in found]
    if missing:
        raise ValidationError({"members": f"unknown entries: {', '.join(missing)}"})
    nested = [m for m in members if found[m].is_blend]
    if nested and combiner.asks_members_again():
        raise ValidationError(
            {
                "params": f"{strategy} asks its members for new answers, and {', '.join(nested)} "
                f"{'is a blend' if len(nested) == 1 else 'are blends'}; name model entries as proposers, "
                "or use layers: 1"
            }
        )
    check_blend_members(team, None, [found[m] for m in members], name=name)
    _check_called_models(team, combiner, members)
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


def check_blend_members(team: Team, blend: Entry | None, members: list[Entry], *, name: str = "") -> None:
    """Refuse members that are not the team's, or would nest blends in a cycle or too deep.

    Every path that sets a blend's members (registration, the admin) goes through here.
    ``blend`` is None for a blend not built yet, which ``name`` then names.
    """
    if blend is not None and not blend.is_blend:
        raise ValidationError({"members": f"{blend.name!r} is a {blend.kind} entry; only blends have members"})
    foreign = [m.name for m in members if m.team_id != team.id]
    if foreign:
        raise ValidationError({"members": f"not entries of {team.name}: {', '.join(foreign)}"})
    # The team's blend graph with this blend's members as proposed; a new blend is node 0 (pks start at 1).
    root = blend.pk if blend is not None and blend.pk else 0
    names = dict(Entry.objects.filter(team=team).values_list("pk", "name"))
    names[root] = blend.name if blend is not None else name
    names.update({m.pk: m.name for m in members})
    links: dict[int, list[int]] = {}
    for blend_id, member_id in (
        BlendMember.objects.filter(blend__team=team)
        .order_by("blend_id", "position")
        .values_list("blend_id", "member_id")
    ):
        links.setdefault(blend_id, []).append(member_id)
    links[root] = [m.pk for m in members]
    cycle = _path_back(root, links)
    if cycle:
        raise ValidationError({"members": f"cycle: {' -> '.join(names[pk] for pk in cycle)}"})
    parents: dict[int, list[int]] = {}
    for parent, children in links.items():
        for child in children:
            parents.setdefault(child, []).append(parent)
    blends = set(links)
    above, below = _longest(root, parents, blends, {}), _longest(root, links, blends, {})
    chain = [*reversed(above[1:]), *below]
    if len(chain) > MAX_BLEND_DEPTH:
        raise ValidationError(
            {
                "members": f"blends nest at most {MAX_BLEND_DEPTH} deep, and {' -> '.join(names[pk] for pk in chain)} "
                f"would be {len(chain)}"
            }
        )


def _path_back(root: int, links: dict[int, list[int]]) -> list[int] | None:
    """A path of member links from ``root`` back to itself, or None."""
    stack, seen = [(root, [root])], {root}
    while stack:
        node, path = stack.pop()
        for child in links.get(node, []):
            if child == root:
                return [*path, root]
            if child not in seen:
                seen.add(child)
                stack.append((child, [*path, child]))
    return None


def _longest(node: int, links: dict[int, list[int]], blends: set[int], memo: dict[int, list[int]]) -> list[int]:
    """The longest chain of blends from ``node`` along ``links`` (to members, or to the blends using one)."""
    if node not in memo:
        memo[node] = [node]  # placeholder: ends the walk should stored links ever hold a cycle
        below = [_longest(child, links, blends, memo) for child in links.get(node, []) if child in blends]
        memo[node] = [node, *max(below, key=len, default=[])]
    return memo[node]


def _check_called_models(team: Team, combiner: Strategy, members: list[str]) -> None:
    """The models a strategy calls itself (fuser, aggregator, pipeline steps) must be the team's model entries."""
    try:
        combiner.check_members(members)
    except EnsembleError as exc:
        raise ValidationError({"params": str(exc)}) from None
    called = combiner.called_members()
    found = {e.name: e for e in Entry.objects.filter(team=team, name__in=set(called.values()))}
    for field, model in called.items():
        if model not in found:
            raise ValidationError({"params": f"{field}: {team.name} has no entry named {model!r}"})
        if found[model].is_blend:
            raise ValidationError({"params": f"{field}: {model!r} is a blend; a strategy can only call model entries"})


def runnable(entries: QuerySet[Entry]) -> QuerySet[Entry]:
    """The entries a run (or a judge) can be given now: every one but archived entries and merges whose
    weights are not built."""
    return entries.filter(~Q(kind=Kind.MERGE) | Q(materialization__state=MergeState.DONE), archived_at__isnull=True)


def not_built(entries: Iterable[Entry]) -> list[str]:
    """``name (state: why)`` for each merge among ``entries`` whose weights are not built."""
    out = []
    for entry in entries:
        if entry.kind != Kind.MERGE:
            continue
        m = Materialization.objects.filter(entry=entry).first()
        if m is None or m.state != MergeState.DONE:
            why = f": {m.reason[:200]}" if m and m.reason else ""
            out.append(f"{entry.name} ({m.state if m else 'not started'}{why})")
    return out
