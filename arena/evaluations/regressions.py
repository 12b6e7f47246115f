"""Did an entry get worse than its previous result on the same suite?

Each finished entry of a run is compared with the same entry's latest earlier finished result on a
suite of the same name. Where both runs scored the same items (the same suite version), the
difference is a paired bootstrap over items, which is far tighter than comparing two intervals;
where the items differ (a new suite version) pairing is impossible, and the current interval is
held against the previous score. Either way an entry regressed when the whole 95% interval of
(current - previous) lies below zero.
"""

from __future__ import annotations

from collections import defaultdict

from django.db.models import OuterRef, Subquery

from arena.evaluations.models import Run, RunEntry, Score, State
from ensembles import stats


def _finished(qs):
    return qs.filter(state=State.DONE, score__isnull=False)


def item_values(pairs: list[tuple[int, int, str]]) -> dict[tuple[int, int], dict[int, float]]:
    """(run, entry) -> {item: value} on each run's report split, in one query."""
    splits = {run_id: split for run_id, _, split in pairs}
    wanted = {(run_id, entry_id) for run_id, entry_id, _ in pairs}
    out: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
    if not wanted:
        return out
    rows = Score.objects.filter(run_id__in=splits, entry_id__in={e for _, e in wanted}).values_list(
        "run_id", "entry_id", "item_id", "item__split", "value"
    )
    for run_id, entry_id, item_id, split, value in rows:
        if (run_id, entry_id) in wanted and split == splits[run_id]:
            out[run_id, entry_id][item_id] = value
    return out


def regressions_for(run: Run) -> list[dict]:
    """Every finished entry of ``run`` that has an earlier finished result, compared with it.

    A constant number of queries, however many entries the run has. Judge suites are left out: an
    entry's score there is its record against the other entries of the same run, not a level.
    """
    if run.suite.task_type == "judge":
        return []
    previous = (
        _finished(RunEntry.objects.filter(entry=OuterRef("entry"), run__team_id=run.team_id))
        .filter(run__suite__name=run.suite.name, run__created_at__lt=run.created_at)
        .order_by("-run__created_at", "-run_id")
        .values("pk")[:1]
    )
    current = list(
        _finished(RunEntry.objects.filter(run=run)).select_related("entry").annotate(previous_id=Subquery(previous))
    )
    earlier = {
        re.pk: re
        for re in RunEntry.objects.filter(pk__in=[c.previous_id for c in current if c.previous_id]).select_related(
            "run"
        )
    }
    values = item_values(
        [(run.pk, c.entry_id, run.report_split) for c in current if c.previous_id]
        + [(p.run_id, p.entry_id, p.run.report_split) for p in earlier.values()]
    )
    out = []
    for re in current:
        prev = earlier.get(re.previous_id)
        if prev is None:
            continue
        mine, theirs = values.get((run.pk, re.entry_id), {}), values.get((prev.run_id, prev.entry_id), {})
        out.append(compare_results(re, prev, mine, theirs, seed=run.pk))
    out.sort(key=lambda r: r["entry"])
    return out


def compare_results(
    current: RunEntry, previous: RunEntry, mine: dict[int, float], theirs: dict[int, float], *, seed: int
) -> dict:
    """One entry's result against its previous one; ``mine``/``theirs`` map item ids to per-item values."""
    if mine and mine.keys() == theirs.keys():
        items = sorted(mine)
        diff = stats.paired_bootstrap_diff([mine[i] for i in items], [theirs[i] for i in items], seed=seed)
        method, delta, low, high = "paired", diff.mean, diff.low, diff.high
    else:
        # Different items: the previous score is taken as fixed and only the current interval counts.
        method = "unpaired"
        delta = current.score - previous.score
        low = current.ci_low - previous.score if current.ci_low is not None else delta
        high = current.ci_high - previous.score if current.ci_high is not None else delta
    return {
        "entry": current.entry.name,
        "entry_id": current.entry_id,
        "score": current.score,
        "previous_run_id": previous.run_id,
        "previous_score": previous.score,
        "delta": delta,
        "delta_low": low,
        "delta_high": high,
        "method": method,
        "regressed": high < 0,
    }
