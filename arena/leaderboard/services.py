"""Snapshots the pages and the API show: a constant number of queries, whatever the size."""

from __future__ import annotations

import numpy as np
from django.db.models import OuterRef, Prefetch, Subquery
from django.utils import timezone

from arena.evaluations import regressions
from arena.evaluations.models import Run, RunEntry, Score, State
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
        "lift_p": re.lift_p,
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
        "judge": {"entry": run.judge.name, "state": run.judge_state, **run.results} if run.judge_id else None,
        "regressions": regressions.for_run(run),
    }


def run_diversity(run: Run) -> dict | None:
    """How much the run's single models disagree, on the reported split: what any blend has to work with.

    The oracle picks the best member per item; its margin over the best member is the headroom
    no combination can exceed. Correlated errors and high kappa mark redundant members; the
    effective number of members says how many independent ones they are worth. None with fewer
    than two single models scored on the same items.
    """
    members = [
        re.entry
        for re in RunEntry.objects.filter(run=run, state=State.DONE).select_related("entry")
        if not re.entry.is_blend
    ]
    if len(members) < 2:
        return None
    members.sort(key=lambda e: e.name)
    grid: dict[int, dict[int, tuple[float, str]]] = {}
    for item_id, entry_id, value, prediction in Score.objects.filter(
        run=run, entry__in=members, item__split=run.report_split
    ).values_list("item_id", "entry_id", "value", "prediction"):
        grid.setdefault(item_id, {})[entry_id] = (value, prediction)
    items = [i for i, row in grid.items() if len(row) == len(members)]
    if not items:
        return None
    values = np.array([[grid[i][m.pk][0] for i in items] for m in members])
    labels = [[grid[i][m.pk][1].strip().lower() for i in items] for m in members]
    room = stats.headroom(values)
    correlation = stats.error_correlation(values >= 0.5)
    kappa = stats.cohen_kappa_matrix(labels)

    def matrix(m: np.ndarray) -> list[list[float | None]]:
        return [[None if np.isnan(x) else round(float(x), 3) for x in row] for row in m]

    return {
        "members": [m.name for m in members],
        "items": len(items),
        "oracle": round(room.oracle, 4),
        "best_member": members[room.best_member].name,
        "best_mean": round(room.best_mean, 4),
        "headroom": round(room.headroom, 4),
        "error_correlation": matrix(correlation),
        "kappa": matrix(kappa),
        "effective_members": round(stats.effective_members(correlation), 2),
    }
