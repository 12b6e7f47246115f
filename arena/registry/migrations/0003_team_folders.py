"""Each team's built models move from ARENA_BUILT_MODELS_DIR/<slug>/ to ARENA_BUILT_MODELS_DIR/<id>/.

A team may register only from its own folder, and a slug can be renamed or, once its team is
deleted, taken by a new team; an id is neither. The stored paths of the team's merges and model
entries move with the files, so what was built before runs as it did (fingerprints hash the files,
not their paths, so cached generations still count). A folder already under a team's id that is
not its own (a deleted team's slug) is set aside as `.unowned-<id>-<n>`, never deleted.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import migrations


def _moved(value: str, old: Path, new: Path) -> str | None:
    if not value:
        return None
    path = Path(value)
    return str(new / path.relative_to(old)) if path.is_relative_to(old) else None


def forwards(apps, schema_editor):
    Team = apps.get_model("teams", "Team")
    Entry = apps.get_model("registry", "Entry")
    Materialization = apps.get_model("registry", "Materialization")
    built = Path(settings.ARENA_BUILT_MODELS_DIR)
    if not built.is_dir():
        return  # nothing was built here (or the folder is not mounted where migrations run)
    teams = list(Team.objects.all())
    in_place = {str(t.pk) for t in teams if t.slug == str(t.pk)}
    olds = {
        t.pk: built / t.slug
        for t in teams
        if str(t.pk) not in in_place and (built / t.slug).is_dir() and not (built / t.slug).is_symlink()
    }
    renames: list[tuple[Path, Path]] = []

    def rename(source: Path, target: Path) -> None:
        source.rename(target)
        renames.append((source, target))

    try:
        # Staged first, so that a slug which is another team's id ("7") cannot collide with it.
        for pk, old in olds.items():
            rename(old, built / f".moving-{pk}")
        # A folder left under a team's id (a deleted team's slug) is not that team's to inherit; one
        # under an id not yet taken is set aside when that team is created (arena/registry/receivers.py).
        for t in teams:
            child = built / str(t.pk)
            if str(t.pk) not in in_place and child.exists():
                n = 1
                while (built / f".unowned-{t.pk}-{n}").exists():
                    n += 1
                rename(child, built / f".unowned-{t.pk}-{n}")
        for pk in olds:
            rename(built / f".moving-{pk}", built / str(pk))
        for pk, old in olds.items():
            new = built / str(pk)
            # Paths were stored as written: under the setting as given, or resolved.
            for prefix in {old, built.resolve() / old.name}:
                for m in Materialization.objects.filter(entry__team_id=pk, path__startswith=str(prefix)):
                    if (path := _moved(m.path, prefix, new)) is not None:
                        m.path = path
                        m.save(update_fields=["path"])
                for entry in Entry.objects.filter(team_id=pk, kind__in=["hf", "gguf"]):
                    if (path := _moved(str(entry.config.get("path") or ""), prefix, new)) is not None:
                        entry.config = {**entry.config, "path": path}
                        entry.save(update_fields=["config"])
    except Exception:
        # The database changes roll back with the migration; the folders go back where they were.
        for source, target in reversed(renames):
            target.rename(source)
        raise


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0002_merge_materialization"),
        ("teams", "0001_initial"),
    ]

    # Backwards leaves folders and stored paths as they are: the paths still name the files.
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
