"""What the registry does when something happens elsewhere."""

from __future__ import annotations

import logging
import shutil
from functools import partial
from pathlib import Path

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from arena.registry.backends import built_dir
from arena.teams.models import Team

log = logging.getLogger(__name__)


@receiver(post_save, sender=Team, dispatch_uid="arena.registry.claim_team_folder")
def _claim_team_folder(sender, instance: Team, created: bool, **kwargs) -> None:
    # A folder already under a new team's id is no work of that team's (a worker's leftovers after
    # its team was deleted, a restored backup): set aside, never inherited nor deleted.
    if not created:
        return
    folder = built_dir(instance.pk)
    if folder.exists():
        aside = set_aside(folder)
        log.warning("set aside %s as %s: it was there before team %s", folder, aside, instance.pk)


def set_aside(folder: Path) -> Path:
    """Rename ``folder`` to a free ``.unowned-<name>-<n>`` beside it, a name no team's folder has."""
    n = 1
    while (aside := folder.with_name(f".unowned-{folder.name}-{n}")).exists():
        n += 1
    folder.rename(aside)
    return aside


@receiver(post_delete, sender=Team, dispatch_uid="arena.registry.remove_team_folder")
def _remove_team_folder(sender, instance: Team, **kwargs) -> None:
    # However the team goes (the admin, a shell), its merges and fine-tunes go with it, once that is
    # committed: a deletion rolled back keeps them.
    transaction.on_commit(partial(remove_folder, built_dir(instance.pk)))


def remove_folder(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s, the folder of a deleted team: %s", path, exc)
