"""The team's dashboard and its boards: one suite's ranking, every suite at once, two entries compared,
and an entry's card (what it is, what produced its results, how it did run after run).

The dashboard sits with the boards because it only reads: it lists everything the team has, and its
forms post to each app's own views (registry, benchmarks, evaluations), which send a refused form back.
"""

from __future__ import annotations

import csv
import json
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse

from arena.benchmarks.models import Suite
from arena.core.forms import SENT_FORM
from arena.evaluations.models import Run, RunEntry
from arena.evaluations.snapshots import live_response
from arena.leaderboard import charts, queries, snapshots, tables
from arena.leaderboard.snapshots import GROUP_KINDS
from arena.leaderboard.snapshots import of_kind as _of_kind
from arena.registry import services as registry
from arena.registry.forms import model_form_context
from arena.registry.models import Entry
from arena.teams.access import get_owned, membership_for, team_for
from arena.teams.models import Role, Team
from ensembles.strategies import STRATEGIES
from ensembles.suites import BUILTIN_SUITES

EXPORT_COLUMNS = [
    "entry",
    "kind",
    "score",
    "ci_low",
    "ci_high",
    "n",
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
            # Archived entries and suites leave the lists and pickers; each is linked once from here.
            "entries": Entry.objects.filter(team=t, archived_at__isnull=True).prefetch_related("member_links__member"),
            "archived_entries": Entry.objects.filter(team=t, archived_at__isnull=False).only("pk", "name"),
            "archived_suites": Suite.objects.filter(team=t, archived_at__isnull=False).only("pk", "name", "version"),
            # A merge not built into weights cannot run nor judge; the entries table still lists it.
            "runnable": registry.runnable(Entry.objects.filter(team=t)),
            # Every split any suite has (the chosen suite's own are checked on starting); test by default.
            "splits": _all_splits(t),
            "suites": Suite.objects.filter(team=t, archived_at__isnull=True),
            "runs": Run.objects.filter(team=t).select_related("suite")[:20],
            # Plain dicts: a template calls whatever is callable, and a class would be instantiated.
            "strategies": [{"name": n, "pretty_name": STRATEGIES.get(n).pretty_name or n} for n in STRATEGIES.names()],
            "builtin_suites": BUILTIN_SUITES.names(),
            # Each kind's help and example, the local models found to pick from, the folders searched.
            **(model_form_context(t) if membership.allows(Role.MEMBER) else {}),
        },
    )


def _all_splits(team) -> list[str]:
    manifests = Suite.objects.filter(team=team).values_list("manifest", flat=True)
    return sorted({split for manifest in manifests for split in manifest.get("splits", ["test"])})


# The leaderboard's sortable columns: (header, ?sort= key, the first click's direction).
BOARD_COLUMNS = [
    ("Entry", "entry", ""),
    ("Kind", "kind", ""),
    ("Score (95% CI)", "score", "-"),
    ("n", "n", "-"),
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
    if not Suite.objects.filter(team=t, name=suite).exists():
        raise Http404(f"{t.name} has no suite named {suite!r}")
    kind, version = request.GET.get("kind", ""), request.GET.get("version", "")
    sort, fmt = request.GET.get("sort") or "-score", request.GET.get("format") or "html"
    if sort.removeprefix("-") not in queries.SORTS:
        return _bad_request(request, t, f"sort: unknown column {sort!r}; choose from {', '.join(queries.SORTS)}")
    if fmt == "live":  # what a live event brings the open page: fetched whenever its socket (re)opens
        return live_response(snapshots.board_push(t, suite, request.GET.dict()))
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
                for v in ["", *queries.suite_versions(t, suite)]
            ],
            # Each team ranks its own entries; a person in several teams switches between their boards.
            "team_links": [
                {"label": other.name, "href": reverse("leaderboard", args=[other.slug, suite]), "on": other == t}
                for other in Team.objects.filter(memberships__user=request.user, suites__name=suite).distinct()
            ],
            "rows_html": tables.board_rows(data["rows"], t.slug, filtered=bool(kind or version)),
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
    data = queries.across_suites(t)
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
            "rows_html": tables.across_rows(data["rows"], data["suites"], t.slug, filtered=bool(kind)),
            "heatmap": charts.suite_heatmap(shown, data["suites"]),
            "lift_heatmap": charts.lift_heatmap(shown, data["suites"]),
            "heatmap_cut": len(data["rows"]) > len(shown),
            "heatmap_rows": HEATMAP_ROWS,
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
        if raw[field] and not raw[field].isdecimal():
            return fail(f"{field}: not an id: {raw[field]!r}")
    if not raw["a"] or not raw["b"]:
        return fail("choose two entries to compare")
    if context["show"] not in queries.SHOW:
        return fail(f"show: one of {', '.join(queries.SHOW)}")
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
    context.update(a_entry=a, b_entry=b, ra=ra, rb=rb, result=queries.compare(ra, rb, context["show"]))
    context["query"] = _query(request.GET, show="")
    return render(request, "leaderboard/compare.html", context)


@login_required
def entry_detail(request, team: str, entry_id: int):
    """An entry's card: what it is, what produced its results, and how it did run after run."""
    membership = membership_for(request.user, team)
    t = membership.team
    entry = get_owned(Entry.objects.all(), t, pk=entry_id)
    history = entry.run_entries.select_related("run__suite").order_by("-run__created_at", "-run_id")[:50]
    points = queries.entry_history(entry)
    verdicts = {p["run_id"]: p for p in points}
    return render(
        request,
        "leaderboard/entry.html",
        {
            "team": t,
            "entry": entry,
            "can_edit": membership.allows(Role.MEMBER),
            "members": entry.ordered_members(),
            "used_by": list(entry.blends.order_by("name")),
            "history": [{"re": h, "check": verdicts.get(h.run_id)} for h in history],
            "config_json": json.dumps(entry.config, indent=2),
            "params_json": json.dumps(entry.params, indent=2),
            "provenance": queries.entry_provenance(entry),
            "history_chart": charts.score_history(points),
            "others": Entry.objects.filter(team=t).exclude(pk=entry.pk).only("pk", "name"),
        },
    )
