"""Archiving and deleting entries: what goes with one, and when it cannot go (arena/core/lifecycle.py).

An entry's results live in runs (arena/evaluations), read here through the entry's own relations.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from django.db import transaction
from pydantic import ValidationError as PydanticError

from arena.core.lifecycle import Account, Refused, counted, names, set_archived
from arena.core.states import TERMINAL
from arena.registry.backends import built_dir
from arena.registry.models import Entry, Kind, Materialization
from arena.registry.receivers import remove_folder
from ensembles.merging import MergeRecipe


def archive(entry: Entry) -> bool:
    """Take ``entry`` off the boards, the run pickers and /v1's list; old runs still show it."""
    return set_archived(entry, True)


def unarchive(entry: Entry) -> bool:
    return set_archived(entry, False)


def merges_naming(entry: Entry) -> list[str]:
    """The team's merge entries whose recipe names ``entry``."""
    out = []
    for name, config in Entry.objects.filter(team_id=entry.team_id, kind=Kind.MERGE).values_list("name", "config"):
        try:
            if entry.name in MergeRecipe.model_validate(config).entry_names():
                out.append(name)
        except PydanticError:
            continue  # a recipe that does not parse names nothing that could be built
    return out


def account(entry: Entry) -> Account:
    """What deleting ``entry`` takes with it, what it changes, and what refuses it."""
    out = Account(f"entry {entry.name}")
    blends = list(entry.blends.order_by("name").values_list("name", flat=True))
    if blends:
        out.refused.append(f"blends {names(blends)} use it: delete them first, or archive it instead")
    merges = merges_naming(entry)
    if merges:
        out.refused.append(f"the recipes of merges {names(merges)} name it: delete them first, or archive it instead")
    busy = sorted(set(entry.run_entries.exclude(state__in=TERMINAL).values_list("run_id", flat=True)))
    if busy:
        out.refused.append(f"it is in unfinished runs #{names(busy)}: wait for them, or delete them")
    runs = sorted(set(entry.run_entries.values_list("run_id", flat=True)))
    if runs:
        scores = entry.scores.count()
        out.goes.append(f"its results in {counted(len(runs), 'run')} (#{names(runs)}), with {counted(scores, 'score')}")
    if entry.is_blend:
        members = [m.name for m in entry.ordered_members()]
        out.changes.append(f"its members {names(members)} stay as entries of their own")
    if entry.kind == Kind.MERGE:
        out.goes.append("its merged weights, built for this team")
    schedules = list(entry.schedules.order_by("name").values_list("name", flat=True))
    if schedules:
        out.changes.append(f"schedules {names(schedules)} no longer evaluate it")
    judged = entry.judged_runs.count()
    if judged:
        out.changes.append(f"{counted(judged, 'run')} it judged keep their verdicts, without naming it")
    if runs:
        out.changes.append(
            "the answers it generated stay in the generations cache, which is keyed by the model's content: "
            "the same model registered again reuses them"
        )
    return out


def delete(entry: Entry) -> Account:
    """Delete ``entry`` with its results, all or nothing; refused (Refused) while anything needs it.
    A merge's built weights are removed once the deletion is committed."""
    with transaction.atomic():
        locked = Entry.objects.select_for_update().filter(pk=entry.pk).first()
        if locked is None:
            raise Refused(f"entry {entry.name} was already deleted")
        out = account(locked)
        out.check()
        folder = _built_folder(locked)
        locked.delete()
        if folder is not None:
            transaction.on_commit(partial(remove_folder, folder))
    return out


def _built_folder(entry: Entry) -> Path | None:
    """A merge's weights directory, when it lies in its team's own folder (never a shared model root)."""
    m = Materialization.objects.filter(entry=entry).exclude(path="").first()
    if m is None:
        return None
    path, own = Path(m.path).resolve(), built_dir(entry.team_id).resolve()
    return path if path.is_relative_to(own) and path != own else None
