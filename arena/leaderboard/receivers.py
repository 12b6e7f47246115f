"""Replace the cached versions when what they stand for changes (arena/core/cache.py).

Live events already replace a team's results version (arena.evaluations.events.publish); these
cover every other way a row changes: pages, the API, the admin, a shell, a test's fixtures.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from arena.alerts.models import RegressionAlert
from arena.benchmarks.models import Suite
from arena.core import cache
from arena.evaluations.events import changed
from arena.evaluations.models import Run, RunEntry
from arena.leaderboard.consumers import memberships_key
from arena.registry.models import Entry
from arena.teams.models import Membership, Team


@receiver([post_save, post_delete], sender=Run, dispatch_uid="arena.leaderboard.run_changed")
@receiver([post_save, post_delete], sender=Entry, dispatch_uid="arena.leaderboard.entry_changed")
@receiver([post_save, post_delete], sender=Suite, dispatch_uid="arena.leaderboard.suite_changed")
def _team_row_changed(sender, instance, **kwargs) -> None:
    changed(instance.team_id)


@receiver(post_save, sender=Team, dispatch_uid="arena.leaderboard.team_created")
def _team_created(sender, instance: Team, created: bool, **kwargs) -> None:
    # An id can come back (SQLite after a rollback, a restored database): never with an old team's snapshots.
    if created:
        changed(instance.pk)


@receiver(post_save, sender=RunEntry, dispatch_uid="arena.leaderboard.run_entry_changed")
@receiver([post_save, post_delete], sender=RegressionAlert, dispatch_uid="arena.leaderboard.alert_changed")
def _run_row_changed(sender, instance, **kwargs) -> None:
    if sender.run.is_cached(instance):
        team_id = instance.run.team_id
    else:
        team_id = Run.objects.filter(pk=instance.run_id).values_list("team_id", flat=True).first()
    if team_id is not None:  # a run deleted with its rows: its own receiver replaced the version
        changed(team_id)


@receiver([post_save, post_delete], sender=Membership, dispatch_uid="arena.leaderboard.membership_changed")
def _membership_changed(sender, instance: Membership, **kwargs) -> None:
    cache.bump(memberships_key(instance.user_id))


@receiver(post_save, sender=get_user_model(), dispatch_uid="arena.leaderboard.user_changed")
def _user_changed(sender, instance, **kwargs) -> None:
    # A deactivated account loses its open pages too.
    cache.bump(memberships_key(instance.pk))
