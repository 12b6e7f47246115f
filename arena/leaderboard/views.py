"""The pages a team uses: dashboard, forms, runs, leaderboards, entries."""

from __future__ import annotations

import csv
import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from arena.benchmarks.models import Suite, SuiteItem
from arena.benchmarks.services import import_suite, library_item, library_suite
from arena.evaluations import services as evaluations
from arena.evaluations.models import Run, Score
from arena.leaderboard import services
from arena.registry import services as registry
from arena.registry.models import Entry, Kind
from arena.teams.access import get_owned, membership_for, team_for
from arena.teams.models import Role
from ensembles.errors import EnsembleError
from ensembles.strategies import STRATEGIES
from ensembles.suites import BUILTIN_SUITES, get_builtin

EXPORT_COLUMNS = [
    "entry",
    "kind",
    "score",
    "ci_low",
    "ci_high",
    "rank_upper_bound",
    "lift",
    "lift_low",
    "lift_high",
    "lift_p",
    "best_member",
    "members",
    "member_calls",
    "tokens",
    "compute_s",
    "latency_p50",
    "latency_p95",
    "suite_version",
    "state",
    "evaluated_at",
]


def _errors(exc: ValidationError) -> list[str]:
    if hasattr(exc, "message_dict"):
        return [f"{field}: {msg}" for field, msgs in exc.message_dict.items() for msg in msgs]
    return list(exc.messages)


@login_required
def dashboard(request, team: str):
    membership = membership_for(request.user, team)
    t = membership.team
    return render(
        request,
        "leaderboard/dashboard.html",
        {
            "team": t,
            "membership": membership,
            "can_edit": membership.allows(Role.MEMBER),
            "entries": Entry.objects.filter(team=t).prefetch_related("member_links__member"),
            "suites": Suite.objects.filter(team=t),
            "runs": Run.objects.filter(team=t).select_related("suite")[:20],
            # Plain dicts: a template calls whatever is callable, and a class would be instantiated.
            "strategies": [
                {"name": n, "pretty_name": STRATEGIES.get(n).pretty_name or n} for n in STRATEGIES.names()
            ],
            "builtin_suites": BUILTIN_SUITES.names(),
            "model_kinds": [(k.value, k.label) for k in (Kind.HF, Kind.GGUF, Kind.OPENAI, Kind.MERGE)],
        },
    )


def _json_field(request, name: str, default):
    raw = request.POST.get(name, "").strip()
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValidationError({name: f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"}) from None


@login_required
@require_http_methods(["POST"])
def register_entry(request, team: str):
    t = team_for(request.user, team, Role.MEMBER)
    try:
        if request.POST.get("kind") == Kind.BLEND:
            members = [m for m in request.POST.getlist("members") if m]
            entry = registry.register_blend(
                t,
                name=request.POST.get("name", ""),
                strategy=request.POST.get("strategy", ""),
                params=_json_field(request, "params", {}),
                members=members,
                user=request.user,
            )
        else:
            entry = registry.register_model(
                t,
                name=request.POST.get("name", ""),
                kind=request.POST.get("kind", ""),
                config=_json_field(request, "config", {}),
                api_key=request.POST.get("api_key", ""),
                user=request.user,
            )
    except ValidationError as exc:
        for msg in _errors(exc):
            messages.error(request, msg)
        return redirect("dashboard", team=t.slug)
    messages.success(request, f"Registered {entry.name}.")
    return redirect("entry", team=t.slug, entry_id=entry.pk)


@login_required
@require_http_methods(["POST"])
def start_run(request, team: str):
    t = team_for(request.user, team, Role.MEMBER)
    suite_id = request.POST.get("suite", "")
    suite = Suite.objects.filter(team=t, pk=int(suite_id)).first() if suite_id.isdigit() else None
    ids = [int(i) for i in request.POST.getlist("entries") if i.isdigit()]
    entries = list(Entry.objects.filter(team=t, pk__in=ids))
    judge_id = request.POST.get("judge", "")
    judge = Entry.objects.filter(team=t, pk=int(judge_id)).first() if judge_id.isdigit() else None
    try:
        if suite is None:
            raise ValidationError({"suite": "choose a suite"})
        if len(entries) != len(ids):
            raise ValidationError({"entries": "unknown entries"})
        if judge_id and judge is None:
            raise ValidationError({"judge": "unknown judge"})
        run = evaluations.create_run(t, suite, entries, user=request.user, judge=judge)
    except ValidationError as exc:
        for msg in _errors(exc):
            messages.error(request, msg)
        return redirect("dashboard", team=t.slug)
    return redirect("run", team=t.slug, run_id=run.pk)


@login_required
@require_http_methods(["POST"])
def add_builtin_suite(request, team: str):
    t = team_for(request.user, team, Role.MEMBER)
    name = request.POST.get("name", "")
    size = request.POST.get("size", "").strip()
    try:
        if size and not size.isdigit():
            raise ValidationError({"size": "size must be a whole number"})
        suite = import_suite(t, get_builtin(name, size=int(size) if size else None))
    except (EnsembleError, ValidationError) as exc:
        msgs = _errors(exc) if isinstance(exc, ValidationError) else [str(exc)]
        for msg in msgs:
            messages.error(request, msg)
    else:
        messages.success(request, f"Added {suite.name} v{suite.version} ({suite.items.count()} items).")
    return redirect("dashboard", team=t.slug)


@login_required
def run_detail(request, team: str, run_id: int):
    t = team_for(request.user, team)
    run = get_owned(Run.objects.select_related("suite", "team"), t, pk=run_id)
    snapshot = services.run_snapshot(run)
    if request.GET.get("format") == "json":
        if run.state == "done":
            snapshot["diversity"] = services.run_diversity(run)
        return JsonResponse(snapshot)
    diversity = services.run_diversity(run) if run.state == "done" else None
    if diversity:
        diversity["rows"] = [
            {"name": name, "correlation": corr, "kappa": kap}
            for name, corr, kap in zip(
                diversity["members"], diversity["error_correlation"], diversity["kappa"], strict=True
            )
        ]
    return render(
        request, "leaderboard/run.html", {"team": t, "run": run, "snapshot": snapshot, "diversity": diversity}
    )


@login_required
def run_items(request, team: str, run_id: int):
    """Item by item: which entry got which item right, each cell linking to its drill-down."""
    t = team_for(request.user, team)
    run = get_owned(Run.objects.select_related("suite"), t, pk=run_id)
    entries = [re.entry for re in run.run_entries.select_related("entry").order_by("entry__kind", "entry__name")]
    values = {
        (item_id, entry_id): value
        for item_id, entry_id, value in Score.objects.filter(run=run).values_list("item_id", "entry_id", "value")
    }
    only = request.GET.get("differ") == "1"
    rows = []
    for item in SuiteItem.objects.filter(suite=run.suite, split__in=run.splits).order_by("position"):
        cells = [values.get((item.pk, e.pk)) for e in entries]
        known = {c for c in cells if c is not None}
        if only and len(known) < 2:
            continue
        rows.append({"item": item, "cells": cells})
    return render(
        request, "leaderboard/run_items.html", {"team": t, "run": run, "entries": entries, "rows": rows, "only": only}
    )


@login_required
def item_detail(request, team: str, run_id: int, item_id: int):
    """Why a blend won or lost one item: the prompt, every member's output, the votes, the reference."""
    t = team_for(request.user, team)
    run = get_owned(Run.objects.select_related("suite"), t, pk=run_id)
    item = SuiteItem.objects.filter(suite=run.suite, pk=item_id).first()
    if item is None:
        raise Http404("no such item in this run")
    suite = library_suite(run.suite)
    scores = list(
        Score.objects.filter(run=run, item=item)
        .select_related("entry", "generation")
        .order_by("entry__kind", "entry__name")
    )
    return render(
        request,
        "leaderboard/item.html",
        {
            "team": t,
            "run": run,
            "item": item,
            "prompt": suite.render_prompt(library_item(item)),
            "reference": suite.reference_answer(library_item(item)),
            "metric": suite.manifest.metric,
            "scores": scores,
        },
    )


@login_required
def leaderboard(request, team: str, suite: str):
    t = team_for(request.user, team)
    data = services.board(t, suite)
    kinds = sorted({r["kind"] for r in data["rows"]})
    kind = request.GET.get("kind", "")
    if kind:
        data["rows"] = [r for r in data["rows"] if r["kind"] == kind]
    fmt = request.GET.get("format")
    if fmt == "json":
        return JsonResponse(data)
    if fmt == "csv":
        response = HttpResponse(content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="{t.slug}-{suite}-leaderboard.csv"'
        writer = csv.writer(response)
        writer.writerow(EXPORT_COLUMNS)
        for r in data["rows"]:
            writer.writerow([";".join(r[c]) if c == "members" else r[c] for c in EXPORT_COLUMNS])
        return response
    return render(
        request, "leaderboard/board.html", {"team": t, "suite": suite, "board": data, "kinds": kinds, "kind": kind}
    )


@login_required
def entry_detail(request, team: str, entry_id: int):
    t = team_for(request.user, team)
    entry = get_owned(Entry.objects.all(), t, pk=entry_id)
    history = entry.run_entries.select_related("run__suite").order_by("-run__created_at")[:50]
    return render(
        request,
        "leaderboard/entry.html",
        {
            "team": t,
            "entry": entry,
            "members": entry.ordered_members(),
            "history": history,
            "config_json": json.dumps(entry.config, indent=2),
            "params_json": json.dumps(entry.params, indent=2),
        },
    )
