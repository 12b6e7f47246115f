"""Suite pages: the team's suites and their versions, uploading a suite or adding a built-in one, one suite's
manifest and items."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from arena.benchmarks import lifecycle
from arena.benchmarks.models import Suite
from arena.benchmarks.services import UploadedText, decode_upload, import_suite, upload_suite
from arena.core.forms import errors
from arena.core.lifecycle import confirm_delete
from arena.teams.access import get_owned, membership_for, team_for
from arena.teams.models import Role
from ensembles.errors import EnsembleError, SuiteError
from ensembles.suites import BUILTIN_SUITES, get_builtin
from ensembles.suites.importers import DEFAULT_FORMAT, upload_format, upload_formats

ITEMS_SHOWN = 50
CSV_COLUMN_FIELDS = ("input", "reference", "choices", "gold", "gold_kind", "split", "id")


def _with_counts(qs):
    return qs.annotate(
        n_items=Count("items"),
        n_dev=Count("items", filter=Q(items__split="dev")),
        n_test=Count("items", filter=Q(items__split="test")),
    )


@login_required
def suite_list(request, team: str):
    membership = membership_for(request.user, team)
    t = membership.team
    return render(
        request,
        "benchmarks/suites.html",
        {
            "team": t,
            "can_edit": membership.allows(Role.MEMBER),
            "suites": _with_counts(Suite.objects.filter(team=t)),
            # Plain values, not the format classes: a template would call a class to instantiate it.
            "formats": [
                {"name": fmt.name, "label": fmt.summary, "files": [(f.key, f.description) for f in fmt.files]}
                for fmt in upload_formats()
            ],
            "named_formats": " and ".join(fmt.pretty_name for fmt in upload_formats() if "name" in fmt.options),
            "builtin_suites": BUILTIN_SUITES.names(),
            "max_bytes": settings.ARENA_SUITE_MAX_BYTES,
            "max_items": settings.ARENA_SUITE_MAX_ITEMS,
        },
    )


def _csv_columns(post) -> dict:
    columns: dict = {}
    for field in CSV_COLUMN_FIELDS:
        value = post.get(f"col_{field}", "").strip()
        if not value:
            continue
        columns[field] = [c.strip() for c in value.split(",") if c.strip()] if field == "choices" else value
    return columns


@login_required
@require_http_methods(["POST"])
def suite_upload(request, team: str):
    """Import uploaded files whole or not at all; every problem is shown with its file and line."""
    t = team_for(request.user, team, Role.MEMBER)
    fmt = request.POST.get("format", DEFAULT_FORMAT)
    try:
        files: dict[str, UploadedText] = {}
        for role in upload_format(fmt).file_keys():
            upload = request.FILES.get(f"{fmt}-{role}")
            if upload is None:
                continue
            limit = settings.ARENA_SUITE_MAX_BYTES
            if upload.size is not None and upload.size > limit:
                # Refused before reading: the size is known from the request.
                raise SuiteError(f"file is larger than the limit of {limit:,} bytes", file=upload.name)
            files[role] = decode_upload(upload.name, upload.read())
        options = {
            "name": request.POST.get("name", "").strip(),
            "seed": request.POST.get("seed", "0").strip() or "0",
            "metric": request.POST.get("metric", "").strip(),
            "scoring": request.POST.get("scoring", "").strip(),
            "columns": _csv_columns(request.POST),
        }
        if not str(options["seed"]).isdecimal():
            raise SuiteError("seed must be a whole number")
        suite, created = upload_suite(t, fmt, files, options)
    except SuiteError as exc:
        messages.error(request, f"Nothing was imported. {exc}")
        return redirect("suites", team=t.slug)
    if created:
        messages.success(request, f"Imported {suite.name} v{suite.version} ({suite.items.count()} items).")
    else:
        messages.info(request, f"{suite.name} v{suite.version} already holds exactly this content; nothing changed.")
    return redirect("suite", team=t.slug, suite_id=suite.pk)


@login_required
@require_http_methods(["POST"])
def add_builtin_suite(request, team: str):
    """Add one of the project's generated suites from the dashboard, which shows how that went."""
    t = team_for(request.user, team, Role.MEMBER)
    name = request.POST.get("name", "")
    size = request.POST.get("size", "").strip()
    try:
        # isdecimal(): the digits int() reads; isdigit() also passes "²", which int() refuses.
        if size and not size.isdecimal():
            raise ValidationError({"size": "size must be a whole number"})
        suite = import_suite(t, get_builtin(name, size=int(size) if size else None))
    except (EnsembleError, ValidationError) as exc:
        msgs = errors(exc) if isinstance(exc, ValidationError) else [str(exc)]
        for msg in msgs:
            messages.error(request, msg)
    else:
        messages.success(request, f"Added {suite.name} v{suite.version} ({suite.items.count()} items).")
    return redirect("dashboard", team=t.slug)


def _item_row(item) -> dict:
    """An item as the page shows it: input, choices and reference, then any other field that is set."""
    data = {k: v for k, v in item.data.items() if v is not None and k not in ("id", "split")}
    rest = {k: v for k, v in data.items() if k not in ("input", "choices", "reference")}
    return {
        "key": item.key,
        "split": item.split,
        "input": data.get("input", ""),
        "choices": data.get("choices") or [],
        "reference": data.get("reference", ""),
        "rest": json.dumps(rest, ensure_ascii=False) if rest else "",
    }


@login_required
def suite_detail(request, team: str, suite_id: int):
    membership = membership_for(request.user, team)
    t = membership.team
    suite = get_owned(_with_counts(Suite.objects.all()), t, pk=suite_id)
    items = list(suite.items.order_by("position")[:ITEMS_SHOWN])
    versions = Suite.objects.filter(team=t, name=suite.name).exclude(pk=suite.pk)
    return render(
        request,
        "benchmarks/suite.html",
        {
            "team": t,
            "suite": suite,
            "can_edit": membership.allows(Role.MEMBER),
            "manifest_json": json.dumps(suite.manifest, indent=2, ensure_ascii=False),
            "items": [_item_row(i) for i in items],
            "more": suite.n_items - len(items),
            "versions": versions,
        },
    )


@login_required
@require_http_methods(["POST"])
def archive_suite(request, team: str, suite_id: int, archived: bool):
    """Archive a suite version (off the boards and the pickers, its runs kept), or bring it back."""
    t = team_for(request.user, team, Role.MEMBER)
    suite = get_owned(Suite.objects.all(), t, pk=suite_id)
    if (lifecycle.archive if archived else lifecycle.unarchive)(suite):
        messages.success(request, f"{'Archived' if archived else 'Unarchived'} {suite.name} v{suite.version}.")
    return redirect("suite", team=t.slug, suite_id=suite.pk)


@login_required
@require_http_methods(["GET", "POST"])
def delete_suite(request, team: str, suite_id: int):
    """What deleting a suite version takes with it (its items and runs); deleting it once confirmed."""
    t = team_for(request.user, team, Role.MEMBER)
    suite = get_owned(Suite.objects.all(), t, pk=suite_id)
    return confirm_delete(
        request,
        team=t,
        account_of=lambda: lifecycle.account(suite),
        delete=lambda: lifecycle.delete(suite),
        back=reverse("suite", args=[t.slug, suite.pk]),
        done=reverse("suites", args=[t.slug]),
    )
