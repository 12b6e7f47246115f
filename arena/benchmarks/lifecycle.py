"""Archiving and deleting suites: what goes with one, and when it cannot go (arena/core/lifecycle.py).

A suite's runs (arena/evaluations) are read and deleted through the suite's own relations: a run holds
its suite, so the runs go first.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count

from arena.benchmarks.models import Suite
from arena.core.lifecycle import Account, Refused, counted, names, set_archived
from arena.core.states import TERMINAL


def archive(suite: Suite) -> bool:
    """Take ``suite`` off the boards and the run pickers; its runs keep their results."""
    return set_archived(suite, True)


def unarchive(suite: Suite) -> bool:
    return set_archived(suite, False)


def account(suite: Suite) -> Account:
    """What deleting ``suite`` takes with it, and what refuses it."""
    out = Account(f"suite {suite.name} v{suite.version}")
    busy = list(suite.runs.exclude(state__in=TERMINAL).order_by("pk").values_list("pk", flat=True))
    if busy:
        out.refused.append(f"runs #{names(busy)} on it have not finished: delete them first (which cancels them)")
    items = suite.items.aggregate(n=Count("pk", distinct=True), scores=Count("scores"))
    out.goes.append(counted(items["n"], "item"))
    runs = list(suite.runs.order_by("pk").values_list("pk", flat=True))
    if runs:
        out.goes.append(f"{counted(len(runs), 'run')} on it (#{names(runs)}), with {counted(items['scores'], 'score')}")
    others = Suite.objects.filter(team_id=suite.team_id, name=suite.name).exclude(pk=suite.pk).count()
    if others:
        out.changes.append(f"its other {counted(others, 'version')} of {suite.name} stay, with their runs")
    return out


def delete(suite: Suite) -> Account:
    """Delete ``suite`` with its items and runs, all or nothing; refused while a run on it is unfinished."""
    with transaction.atomic():
        locked = Suite.objects.select_for_update().filter(pk=suite.pk).first()
        if locked is None:
            raise Refused(f"suite {suite.name} v{suite.version} was already deleted")
        out = account(locked)
        out.check()
        locked.runs.all().delete()
        locked.delete()
    return out
