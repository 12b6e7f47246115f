"""Snapshots the pages and the API show: a constant number of queries, whatever the size."""

from __future__ import annotations

from django.db.models import OuterRef, Prefetch, Subquery
from django.utils import timezone

from arena.evaluations.models import Run, RunEntry, State
from arena.registry.models import BlendMember
from arena.teams.models import Team
from ensembles import stats


def _interval(re: RunEntry) -> stats.Interval:
    return stats.Interval(re.score, re.ci_low, re.ci_high, re.n)


def entry_row(re: RunEntry) -> dict:
    e = re.entry
    return {
        "entry_id": e.pk,
        "entry": e.name,
        "kind": e.label,
        "is_blend": e.is_blend,
        "members": [bm.member.name for bm in e.member_links.all()] if e.is_blend else [],
        "state": re.state,
        "error": re.error,
        "done_items": re.done_items,
        "total_items": re.total_items,
        "score": re.score,
        "ci_low": re.ci_low,
        "ci_high": re.ci_high,
        "n": re.n,
        "lift": re.lift,
        "lift_low": re.lift_low,
        "lift_high": re.lift_high,
        "best_member": re.best_member.name if re.best_member else None,
        "member_calls": re.member_calls,
        "new_calls": re.new_calls,
        "tokens": re.tokens,
        "compute_s": round(re.compute_s, 3),
        "latency_p50": re.latency_p50,
        "latency_p95": re.latency_p95,
        "run_id": re.run_id,
        "evaluated_at": re.finished_at.isoformat() if re.finished_at else None,
    }


def _with_entries(qs):
    members = Prefetch("entry__member_links", queryset=BlendMember.objects.select_related("member"))
    return qs.select_related("entry", "best_member").prefetch_related(members)


def board(team: Team, suite_name: str) -> dict:
    """The latest result of every entry the team evaluated on any version of ``suite_name``."""
    latest = (
        RunEntry.objects.filter(entry=OuterRef("entry"), run__team=team, run__suite__name=suite_name)
        .exclude(run__state=State.QUEUED)
        .order_by("-run__created_at")
        .values("pk")[:1]
    )
    rows = list(
        _with_entries(RunEntry.objects.filter(pk=Subquery(latest), run__team=team)).select_related("run__suite")
    )
    scored = [re for re in rows if re.score is not None]
    bounds = dict(zip((re.pk for re in scored), stats.rank_upper_bounds([_interval(re) for re in scored]), strict=True))
    out = []
    for re in rows:
        row = entry_row(re)
        row["rank_upper_bound"] = bounds.get(re.pk)
        row["suite_version"] = re.run.suite.version
        out.append(row)
    out.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0), r["entry"]))
    return {"team": team.slug, "suite": suite_name, "rows": out}


def run_snapshot(run: Run) -> dict:
    rows = [entry_row(re) for re in _with_entries(RunEntry.objects.filter(run=run))]
    rows.sort(key=lambda r: (r["is_blend"], r["entry"]))
    elapsed = None
    if run.started_at:
        end = run.finished_at or timezone.now()
        elapsed = (end - run.started_at).total_seconds()
    return {
        "id": run.pk,
        "team": run.team.slug,
        "suite": run.suite.name,
        "suite_version": run.suite.version,
        "splits": run.splits,
        "state": run.state,
        "error": run.error,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "elapsed_s": elapsed,
        "provenance": run.provenance,
        "entries": rows,
    }
