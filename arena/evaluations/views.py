"""Run pages: starting a run, its live progress and results, item by item, and one item's drill-down."""

from __future__ import annotations

from collections import defaultdict

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from arena.benchmarks.models import Suite, SuiteItem
from arena.benchmarks.services import library_item, library_suite
from arena.core.forms import SENT_FORM, errors, keep_sent
from arena.core.lifecycle import confirm_delete
from arena.evaluations import charts, exports, lifecycle, queries, services, snapshots, tables
from arena.evaluations.decisions import explain
from arena.evaluations.models import Run, Score, State
from arena.registry.models import BlendMember, Entry
from arena.teams.access import get_owned, membership_for, team_for
from arena.teams.models import Role
from ensembles.strategies import STRATEGIES

# What the run page answers besides itself: its live push, and its results as JSON or CSV.
RUN_FORMATS = ("html", "live", "json", "csv")


def _unknown_format(fmt: str, known: tuple[str, ...]) -> JsonResponse:
    return JsonResponse({"error": f"format: unknown format {fmt!r}; choose from {', '.join(known)}"}, status=400)


@login_required
@require_http_methods(["POST"])
def start_run(request, team: str):
    t = team_for(request.user, team, Role.MEMBER)
    suite_id = request.POST.get("suite", "")
    suite = Suite.objects.filter(team=t, pk=int(suite_id)).first() if suite_id.isdecimal() else None
    ids = [int(i) for i in request.POST.getlist("entries") if i.isdecimal()]
    entries = list(Entry.objects.filter(team=t, pk__in=ids))
    judge_id = request.POST.get("judge", "")
    judge = Entry.objects.filter(team=t, pk=int(judge_id)).first() if judge_id.isdecimal() else None
    try:
        if suite is None:
            raise ValidationError({"suite": "choose a suite"})
        if len(entries) != len(ids):
            raise ValidationError({"entries": "unknown entries"})
        if judge_id and judge is None:
            raise ValidationError({"judge": "unknown judge"})
        splits = request.POST.getlist("splits")
        run = services.create_run(t, suite, entries, splits=splits or None, user=request.user, judge=judge)
    except ValidationError as exc:
        for msg in errors(exc):
            messages.error(request, msg)
        keep_sent(request, "run", ("suite", "judge"), ("entries", "splits"))
        request.session[SENT_FORM]["errors"] = errors(exc)  # shown in the form as well as above
        return redirect("dashboard", team=t.slug)
    return redirect("run", team=t.slug, run_id=run.pk)


@login_required
def run_detail(request, team: str, run_id: int):
    membership = membership_for(request.user, team)
    t = membership.team
    run = get_owned(Run.objects.select_related("suite", "team"), t, pk=run_id)
    fmt = request.GET.get("format") or "html"
    if fmt not in RUN_FORMATS:
        return _unknown_format(fmt, RUN_FORMATS)
    if fmt == "live":
        # What a live event brings the open page: fetched whenever its socket (re)opens.
        return snapshots.live_response(snapshots.run_push(run.pk))
    snapshot = snapshots.run_snapshot(run)
    if fmt == "csv":
        return exports.run_csv(request, run, snapshot)
    if fmt == "json":
        if run.finished:
            snapshot["diversity"] = queries.run_diversity(run)
            snapshot["size_curve"] = queries.size_curve(run)
        return JsonResponse(snapshot)
    diversity = queries.run_diversity(run) if run.finished else None
    if diversity:
        diversity["rows"] = [
            {"name": name, "correlation": corr, "kappa": kap}
            for name, corr, kap in zip(
                diversity["members"], diversity["error_correlation"], diversity["kappa"], strict=True
            )
        ]
    done = run.finished
    size_curve = queries.size_curve(run)
    return render(
        request,
        "evaluations/run.html",
        {
            "team": t,
            "run": run,
            "snapshot": snapshot,
            "rows_html": tables.run_rows(snapshot["entries"]),
            "diversity": diversity,
            "agreement_chart": charts.member_agreement(diversity),
            "selection_charts": [
                {"id": f"selection-{c['entry_id']}", "figure": charts.selection_gain(c)}
                for c in (queries.selection_curves(run) if done else [])
            ],
            "boosting_rounds": queries.boosting_rounds(run) if done else [],
            "calibration_tables": queries.calibration_tables(run) if done else [],
            "size_curve": size_curve,
            "size_chart": charts.size_gain(size_curve),
            "can_edit": membership.allows(Role.MEMBER),
            "can_retry": run.state in (State.PARTIAL, State.FAILED)
            and run.suite.task_type != "judge"
            and membership.allows(Role.MEMBER),
        },
    )


@login_required
@require_http_methods(["POST"])
def retry_run(request, team: str, run_id: int):
    """Run again only the entries that failed; the page then follows them live."""
    t = team_for(request.user, team, Role.MEMBER)
    run = get_owned(Run.objects.select_related("suite", "team"), t, pk=run_id)
    try:
        retried = services.retry_failed(run)
    except ValidationError as exc:
        for msg in errors(exc):
            messages.error(request, msg)
    else:
        messages.success(request, f"retrying {retried} failed {'entry' if retried == 1 else 'entries'}")
    return redirect("run", team=t.slug, run_id=run.pk)


@login_required
def run_items(request, team: str, run_id: int):
    """Item by item: which entry got which item right, each cell linking to its drill-down."""
    t = team_for(request.user, team)
    run = get_owned(Run.objects.select_related("suite", "team"), t, pk=run_id)
    fmt = request.GET.get("format") or "html"
    if fmt in exports.FORMATS:
        return exports.items_file(request, run, fmt)
    if fmt != "html":
        return _unknown_format(fmt, ("html", *exports.FORMATS))
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
        request, "evaluations/run_items.html", {"team": t, "run": run, "entries": entries, "rows": rows, "only": only}
    )


@login_required
def item_detail(request, team: str, run_id: int, item_id: int):
    """Why a blend won or lost one item: the prompt, every member's output and score, the reference, and how
    each blend decided, in sentences and tables (arena/evaluations/decisions.py)."""
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
    members: dict[int, list[str]] = defaultdict(list)
    links = BlendMember.objects.filter(blend__in=[s.entry for s in scores if s.entry.is_blend])
    for blend_id, name in links.order_by("blend_id", "position").values_list("blend_id", "member__name"):
        members[blend_id].append(name)
    given = {s.entry.name: (s.prediction, s.value) for s in scores}
    decisions = [
        {
            "score": s,
            "strategy": STRATEGIES.get(s.entry.strategy).pretty_name if s.entry.strategy in STRATEGIES else "",
            # What the blend read: its own members' answers on the item, not every entry's in the run.
            **explain(s.details, {m: given[m] for m in members[s.entry_id] if m in given}, s.prediction),
        }
        for s in scores
        if s.entry.is_blend
    ]
    return render(
        request,
        "evaluations/item.html",
        {
            "team": t,
            "run": run,
            "item": item,
            "prompt": suite.render_prompt(library_item(item)),
            "reference": suite.reference_answer(library_item(item)),
            "metric": suite.manifest.metric,
            "scores": scores,
            "decisions": decisions,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def delete_run(request, team: str, run_id: int):
    """What deleting a run takes with it; deleting it once confirmed (cancelled first while it works)."""
    t = team_for(request.user, team, Role.MEMBER)
    run = get_owned(Run.objects.select_related("suite"), t, pk=run_id)
    return confirm_delete(
        request,
        team=t,
        account_of=lambda: lifecycle.account(run),
        delete=lambda: lifecycle.delete(run),
        back=reverse("run", args=[t.slug, run.pk]),
        done=reverse("dashboard", args=[t.slug]),
    )
