"""The pages a team uses: dashboard, forms, runs, leaderboards, entries."""

from __future__ import annotations

import csv
import json
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from arena.benchmarks.models import Suite, SuiteItem
from arena.benchmarks.services import import_suite, library_item, library_suite
from arena.evaluations import services as evaluations
from arena.evaluations.models import Run, RunEntry, Score
from arena.leaderboard import charts, services, snapshots, tables
from arena.leaderboard.snapshots import GROUP_KINDS
from arena.leaderboard.snapshots import of_kind as _of_kind
from arena.registry import services as registry
from arena.registry.models import Entry, Kind
from arena.teams.access import get_owned, membership_for, team_for
from arena.teams.models import Role, Team
from ensembles.errors import EnsembleError
from ensembles.parsing import load_json
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
    sent = request.session.pop(SENT_FORM, {})
    return render(
        request,
        "leaderboard/dashboard.html",
        {
            "team": t,
            # What a refused form sent, so the user corrects it rather than typing it again.
            "sent": {sent.get("form", ""): sent},
            "membership": membership,
            "can_edit": membership.allows(Role.MEMBER),
            "entries": Entry.objects.filter(team=t).prefetch_related("member_links__member"),
            # A merge not built into weights cannot run nor judge; the entries table still lists it.
            "runnable": registry.runnable(Entry.objects.filter(team=t)),
            # Every split any suite has (the chosen suite's own are checked on starting); test by default.
            "splits": _all_splits(t),
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


SENT_FORM = "dashboard_form"


def _all_splits(team) -> list[str]:
    manifests = Suite.objects.filter(team=team).values_list("manifest", flat=True)
    return sorted({split for manifest in manifests for split in manifest.get("splits", ["test"])})


def _keep_sent(request, form: str, fields: tuple[str, ...], lists: tuple[str, ...] = ()) -> None:
    """Keep a refused form's values (never an API key) for the dashboard the error redirects to."""
    request.session[SENT_FORM] = {
        "form": form,
        **{f: request.POST.get(f, "") for f in fields},
        **{f: request.POST.getlist(f) for f in lists},
    }


def _json_field(request, name: str, default):
    raw = request.POST.get(name, "").strip()
    if not raw:
        return default
    try:
        return load_json(raw)
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
        if request.POST.get("kind") == Kind.BLEND:
            _keep_sent(request, "blend", ("name", "strategy", "params"), ("members",))
        else:
            _keep_sent(request, "model", ("name", "kind", "config"))
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
        splits = request.POST.getlist("splits")
        run = evaluations.create_run(t, suite, entries, splits=splits or None, user=request.user, judge=judge)
    except ValidationError as exc:
        for msg in _errors(exc):
            messages.error(request, msg)
        _keep_sent(request, "run", ("suite", "judge"), ("entries", "splits"))
        request.session[SENT_FORM]["errors"] = _errors(exc)  # shown in the form as well as above
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
    snapshot = snapshots.run_snapshot(run)
    if request.GET.get("format") == "json":
        if run.state == "done":
            snapshot["diversity"] = services.run_diversity(run)
            snapshot["size_curve"] = services.run_size_curve(run)
        return JsonResponse(snapshot)
    diversity = services.run_diversity(run) if run.state == "done" else None
    if diversity:
        diversity["rows"] = [
            {"name": name, "correlation": corr, "kappa": kap}
            for name, corr, kap in zip(
                diversity["members"], diversity["error_correlation"], diversity["kappa"], strict=True
            )
        ]
    done = run.state == "done"
    size_curve = services.run_size_curve(run)
    return render(
        request,
        "leaderboard/run.html",
        {
            "team": t,
            "run": run,
            "snapshot": snapshot,
            "diversity": diversity,
            "agreement_chart": charts.member_agreement(diversity),
            "selection_charts": [
                {"id": f"selection-{c['entry_id']}", "figure": charts.selection_gain(c)}
                for c in (services.selection_curves(run) if done else [])
            ],
            "boosting_rounds": services.boosting_rounds(run) if done else [],
            "calibration_tables": services.calibration_tables(run) if done else [],
            "size_curve": size_curve,
            "size_chart": charts.size_gain(size_curve),
        },
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
    for s in scores:
        # How a blend decided, one "key: value" line per top-level key (values as compact JSON).
        s.how = "\n".join(
            f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}" for k, v in (s.details or {}).items()
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


# The leaderboard's sortable columns: (header, ?sort= key, the first click's direction).
BOARD_COLUMNS = [
    ("Entry", "entry", ""),
    ("Kind", "kind", ""),
    ("Score (95% CI)", "score", "-"),
    ("Rank ≤", "rank", ""),
    ("Lift over best member (95% CI)", "lift", "-"),
    ("Members", None, ""),
    ("Calls", "calls", ""),
    ("Tokens", "tokens", ""),
    ("Compute s", "compute", ""),
    ("Latency p50/p95 s", "latency", ""),
    ("Version", "version", "-"),
    ("Evaluated", "evaluated", "-"),
]
BOARD_FORMATS = ("html", "json", "csv", "chart")
# A heat map taller than this stops being readable; the table below it has every entry.
HEATMAP_ROWS = 60


def _query(params, **changes) -> str:
    """The page's query string with ``changes`` applied; empty values and the export format dropped."""
    merged = {k: v for k, v in params.items() if k != "format"} | changes
    return urlencode({k: v for k, v in merged.items() if v})


def _bad_request(request, team, message: str) -> HttpResponse:
    if request.GET.get("format") in ("json", "csv", "chart"):
        return JsonResponse({"error": message}, status=400)
    return render(request, "leaderboard/bad_request.html", {"team": team, "message": message}, status=400)


def _csv(filename: str, header: list[str], rows) -> HttpResponse:
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(header)
    writer.writerows(rows)
    return response


@login_required
def leaderboard(request, team: str, suite: str):
    """One suite's ranking; every export (JSON, CSV, the chart) holds exactly the rows the page shows."""
    t = team_for(request.user, team)
    kind, version = request.GET.get("kind", ""), request.GET.get("version", "")
    sort, fmt = request.GET.get("sort") or "-score", request.GET.get("format") or "html"
    if sort.removeprefix("-") not in services.SORTS:
        return _bad_request(request, t, f"sort: unknown column {sort!r}; choose from {', '.join(services.SORTS)}")
    if fmt not in BOARD_FORMATS:
        return _bad_request(request, t, f"format: unknown format {fmt!r}; choose from {', '.join(BOARD_FORMATS[1:])}")
    data, kinds = snapshots.shown_board(t, suite, kind=kind, version=version, sort=sort)
    if fmt == "json":
        return JsonResponse(data)
    if fmt == "chart":
        return JsonResponse(charts.cost_quality(data["rows"]), safe=False)
    if fmt == "csv":
        return _csv(
            f"{t.slug}-{suite}-leaderboard.csv",
            EXPORT_COLUMNS,
            ([";".join(r[c]) if c == "members" else r[c] for c in EXPORT_COLUMNS] for r in data["rows"]),
        )
    query = _query(request.GET)
    columns = []
    for label, key, first in BOARD_COLUMNS:
        if key is None:
            columns.append({"label": label})
            continue
        on = sort.removeprefix("-") == key
        flipped = ("" if sort.startswith("-") else "-") + key
        columns.append(
            {
                "label": label,
                "href": "?" + _query(request.GET, sort=flipped if on else first + key),
                "arrow": ("▼" if sort.startswith("-") else "▲") if on else "",
            }
        )
    return render(
        request,
        "leaderboard/board.html",
        {
            "team": t,
            "suite": suite,
            "board": data,
            "kinds": kinds,
            "kind": kind,
            "version": version,
            "columns": columns,
            "query": query,
            "kind_links": [
                {"label": k or "all", "href": "?" + _query(request.GET, kind=k), "on": k == kind}
                for k in ["", *GROUP_KINDS, *kinds]
            ],
            "version_links": [
                {"label": f"v{v}" if v else "all", "href": "?" + _query(request.GET, version=v), "on": v == version}
                for v in ["", *services.suite_versions(t, suite)]
            ],
            # Each team ranks its own entries; a person in several teams switches between their boards.
            "team_links": [
                {"label": other.name, "href": reverse("leaderboard", args=[other.slug, suite]), "on": other == t}
                for other in Team.objects.filter(memberships__user=request.user, suites__name=suite).distinct()
            ],
            "rows_html": tables.board_rows(data["rows"], t.slug),
            "cost_quality": charts.cost_quality(data["rows"]),
        },
    )


@login_required
def leaderboards(request, team: str):
    """Every suite at once: entries × suites, ranked by mean win rate, with the per-suite heat map."""
    t = team_for(request.user, team)
    kind, fmt = request.GET.get("kind", ""), request.GET.get("format") or "html"
    if fmt not in ("html", "json", "csv"):
        return _bad_request(request, t, f"format: unknown format {fmt!r}; choose from json, csv")
    data = services.across_suites(t)
    kinds = sorted({r["kind"] for r in data["rows"]})
    data["rows"] = _of_kind(data["rows"], kind)
    data["filters"] = {"kind": kind}
    if fmt == "json":
        return JsonResponse(data)
    if fmt == "csv":
        return _csv(
            f"{t.slug}-leaderboards.csv",
            ["entry", "kind", "win_rate", "mean_score", "suites", *data["suites"]],
            (
                [r["entry"], r["kind"], r["win_rate"], r["mean_score"], r["suites"]]
                + [r["scores"].get(s) for s in data["suites"]]
                for r in data["rows"]
            ),
        )
    shown = data["rows"][:HEATMAP_ROWS]
    return render(
        request,
        "leaderboard/across.html",
        {
            "team": t,
            "board": data,
            "kind": kind,
            "query": _query(request.GET),
            "kind_links": [
                {"label": k or "all", "href": "?" + _query(request.GET, kind=k), "on": k == kind}
                for k in ["", *GROUP_KINDS, *kinds]
            ],
            "rows_html": tables.across_rows(data["rows"], data["suites"], t.slug),
            "heatmap": charts.suite_heatmap(shown, data["suites"]),
            "heatmap_cut": len(data["rows"]) > len(shown),
            "heatmap_rows": HEATMAP_ROWS,
        },
    )


@login_required
def entry_detail(request, team: str, entry_id: int):
    """An entry's card: what it is, what produced its results, and how it did run after run."""
    t = team_for(request.user, team)
    entry = get_owned(Entry.objects.all(), t, pk=entry_id)
    history = entry.run_entries.select_related("run__suite").order_by("-run__created_at", "-run_id")[:50]
    points = services.entry_history(entry)
    verdicts = {p["run_id"]: p for p in points}
    return render(
        request,
        "leaderboard/entry.html",
        {
            "team": t,
            "entry": entry,
            "members": entry.ordered_members(),
            "used_by": list(entry.blends.order_by("name")),
            "history": [{"re": h, "check": verdicts.get(h.run_id)} for h in history],
            "config_json": json.dumps(entry.config, indent=2),
            "params_json": json.dumps(entry.params, indent=2),
            "provenance": services.entry_provenance(entry),
            "history_chart": charts.score_history(points),
            "others": Entry.objects.filter(team=t).exclude(pk=entry.pk).only("pk", "name"),
        },
    )


def _finished_result(run_id, entry: Entry) -> RunEntry | None:
    return (
        RunEntry.objects.filter(run_id=run_id, entry=entry, state="done").select_related("run__suite", "entry").first()
    )


def _latest_on_suite(entry: Entry, suite: str) -> RunEntry | None:
    return (
        RunEntry.objects.filter(entry=entry, state="done", run__suite__name=suite)
        .select_related("run__suite", "entry")
        .order_by("-run__created_at", "-run_id")
        .first()
    )


@login_required
def compare(request, team: str):
    """Two entries item by item, on one run where both finished, or each one's latest result on a suite."""
    t = team_for(request.user, team)
    entries = list(Entry.objects.filter(team=t).only("pk", "name", "kind", "strategy"))
    context: dict = {"team": t, "entries": entries, "show": request.GET.get("show") or "differ"}
    raw = {k: request.GET.get(k, "").strip() for k in ("a", "b", "run", "suite")}
    context.update(raw)
    if not raw["a"] and not raw["b"]:
        return render(request, "leaderboard/compare.html", context)

    def fail(message: str) -> HttpResponse:
        messages.error(request, message)
        return render(request, "leaderboard/compare.html", context, status=400)

    for field in ("a", "b", "run"):
        if raw[field] and not raw[field].isdigit():
            return fail(f"{field}: not an id: {raw[field]!r}")
    if not raw["a"] or not raw["b"]:
        return fail("choose two entries to compare")
    if context["show"] not in services.SHOW:
        return fail(f"show: one of {', '.join(services.SHOW)}")
    a = get_owned(Entry.objects.all(), t, pk=int(raw["a"]))
    b = get_owned(Entry.objects.all(), t, pk=int(raw["b"]))
    if a.pk == b.pk:
        return fail("choose two different entries")
    runs_a = RunEntry.objects.filter(entry=a, state="done").values("run_id")
    shared = RunEntry.objects.filter(entry=b, state="done", run_id__in=runs_a)
    context["runs"] = list(
        Run.objects.filter(team=t, pk__in=shared.values("run_id")).select_related("suite").order_by("-created_at")[:50]
    )
    context["suites"] = sorted(
        set(RunEntry.objects.filter(entry=a, state="done").values_list("run__suite__name", flat=True))
        & set(RunEntry.objects.filter(entry=b, state="done").values_list("run__suite__name", flat=True))
    )
    if raw["run"]:
        run = get_owned(Run.objects.all(), t, pk=int(raw["run"]))
        ra, rb = _finished_result(run.pk, a), _finished_result(run.pk, b)
        missing = [e.name for e, r in ((a, ra), (b, rb)) if r is None]
        if missing:
            return fail(f"run #{run.pk} has no finished result of {' and '.join(missing)}")
    elif raw["suite"]:
        ra, rb = _latest_on_suite(a, raw["suite"]), _latest_on_suite(b, raw["suite"])
        missing = [e.name for e, r in ((a, ra), (b, rb)) if r is None]
        if missing:
            return fail(f"{' and '.join(missing)} never finished a run on {raw['suite']}")
    elif context["runs"]:
        ra, rb = _finished_result(context["runs"][0].pk, a), _finished_result(context["runs"][0].pk, b)
    else:
        return fail(f"{a.name} and {b.name} never finished the same run: choose a suite")
    context.update(a_entry=a, b_entry=b, ra=ra, rb=rb, result=services.compare(ra, rb, context["show"]))
    context["query"] = _query(request.GET, show="")
    return render(request, "leaderboard/compare.html", context)
