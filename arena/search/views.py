"""Pages: start a blend search from a finished run, watch it, and register what it found."""

from __future__ import annotations

import json
import math

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from arena.evaluations.models import TERMINAL, Run
from arena.search import services
from arena.search.charts import search_chart
from arena.search.models import BlendSearch, CostMetric
from arena.teams.access import get_owned, membership_for
from arena.teams.models import Role
from ensembles.search import one_member_only, verdict


def _errors(exc: ValidationError) -> list[str]:
    if hasattr(exc, "message_dict"):
        return [f"{field}: {msg}" for field, msgs in exc.message_dict.items() for msg in msgs]
    return list(exc.messages)


def _budget(raw: str) -> float | None:
    """The budget field: empty means no limit; anything else must read as a number."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError({"budget": f"budget must be a number (or empty for no limit), not {raw!r}"}) from None
    if not math.isfinite(value):
        raise ValidationError({"budget": "budget must be a finite number"})
    return value


def start_form(run: Run, can_edit: bool) -> dict:
    """What the start form shows: the run's finished entries and the cost measures (plain data for templates)."""
    return {
        "run": run,
        "can_edit": can_edit,
        "members": services.searchable_members(run) if run.finished else [],
        "metrics": [{"value": v, "label": label} for v, label in CostMetric.choices],
        "max_members": services.MAX_MEMBERS,
        "searches": list(BlendSearch.objects.filter(run=run).order_by("-created_at")[:20]),
    }


@login_required
@require_http_methods(["GET", "POST"])
def run_searches(request, team: str, run_id: int):
    """A run's searches and the form that starts one (members may start; viewers see)."""
    membership = membership_for(request.user, team)
    t = membership.team
    run = get_owned(Run.objects.select_related("suite"), t, pk=run_id)
    errors: list[str] = []
    chosen = {"members": [], "budget_metric": CostMetric.CALLS, "budget": ""}
    if request.method == "POST":
        membership_for(request.user, team, Role.MEMBER)
        chosen = {
            "members": request.POST.getlist("members"),
            "budget_metric": request.POST.get("budget_metric", CostMetric.CALLS),
            "budget": request.POST.get("budget", ""),
        }
        try:
            search = services.start_search(
                t,
                run,
                members=chosen["members"],
                budget_metric=chosen["budget_metric"],
                budget=_budget(chosen["budget"]),
                user=request.user,
            )
        except ValidationError as exc:
            errors = _errors(exc)
        else:
            messages.success(request, f"Blend search #{search.pk} started: it reads only the run's dev answers.")
            return redirect("search", team=t.slug, search_id=search.pk)
    return render(
        request,
        "search/run_searches.html",
        {"team": t, "search_form": start_form(run, membership.allows(Role.MEMBER)), "errors": errors, "chosen": chosen},
        status=422 if errors else 200,
    )


def _row(search: BlendSearch, index: int, candidate: dict) -> dict:
    return {
        **candidate,
        "index": index,
        "params_json": json.dumps(candidate["params"], sort_keys=True),
        "budget_cost": candidate["cost"][search.budget_metric],
        "suggested": services.suggested_name(search, index),
        "registered_as": search.registered.get(str(index)),
    }


def _render(request, membership, search: BlendSearch, errors: list[str] | None = None, status: int = 200):
    results = search.results or {}
    candidates = results.get("candidates", [])
    # A search stored before one-member settings were left out may hold one on its Pareto set.
    pareto = [
        _row(search, i, candidates[i])
        for i in results.get("pareto", [])
        if not one_member_only(candidates[i]["strategy"], candidates[i]["params"])
    ]
    return render(
        request,
        "search/search.html",
        {
            "team": membership.team,
            "search": search,
            "can_edit": membership.allows(Role.MEMBER),
            "live": search.state not in TERMINAL,
            "metric_label": CostMetric(search.budget_metric).label,
            "pareto": list(reversed(pareto)),  # best first
            "candidates": sorted(
                (_row(search, i, c) for i, c in enumerate(candidates)),
                key=lambda r: (r["quality"] is None, -(r["quality"] or 0.0), r["budget_cost"]),
            ),
            "members_alone": results.get("members", []),
            "verdict": verdict(results) if search.state == "done" else None,
            "left_out": sorted(results.get("left_out", {}).items()),
            "redundant": sorted(results.get("redundant", {}).items()),
            "chart": search_chart(results, search.budget_metric, search.budget) if search.state == "done" else None,
            "errors": errors or [],
        },
        status=status,
    )


@login_required
def search_detail(request, team: str, search_id: int):
    membership = membership_for(request.user, team)
    search = get_owned(BlendSearch.objects.select_related("run__suite"), membership.team, pk=search_id)
    return _render(request, membership, search)


@login_required
@require_http_methods(["POST"])
def register(request, team: str, search_id: int):
    """Register one candidate as a blend and, unless unticked, run it on the search's suite."""
    membership = membership_for(request.user, team, Role.MEMBER)
    t = membership.team
    search = get_owned(BlendSearch.objects.select_related("run__suite"), t, pk=search_id)
    try:
        raw = request.POST.get("candidate", "")
        if not raw.strip().isdecimal():
            raise ValidationError({"candidate": f"candidate must be a candidate's number, not {raw!r}"})
        blend, run = services.register_candidate(
            search,
            int(raw),
            name=request.POST.get("name", ""),
            run_it=request.POST.get("run") == "on",
            user=request.user,
        )
    except ValidationError as exc:
        return _render(request, membership, search, _errors(exc), status=422)
    if run is None:
        messages.success(request, f"Registered {blend.name}.")
        return redirect("entry", team=t.slug, entry_id=blend.pk)
    messages.success(
        request,
        f"Registered {blend.name} and started run #{run.pk} on {search.run.suite.name}: its test score comes next.",
    )
    return redirect("run", team=t.slug, run_id=run.pk)
