"""Analyse: a scored entry's mean on the report split with a bootstrap interval, its cost and latency,
and a blend's lift over its best member (a paired interval, and McNemar's test where items are right or
wrong); once every entry has finished (done, or failed), what the run shows beyond them over the ones that
are done (the ensemble-size curve)."""

from __future__ import annotations

import numpy as np
from django.utils import timezone

from arena.evaluations import analysis, events
from arena.evaluations.models import TERMINAL, EntryState, Run, RunEntry, Score
from arena.evaluations.pipeline.state import RunState
from arena.registry.models import Entry
from ensembles import stats


def step(state: RunState) -> RunState:
    scored = [re for re in state.entries if re.state == EntryState.SCORED]
    for re in scored:
        aggregate(state.run, re)
    if scored:
        return state.reread()
    run = state.run
    finished = all(re.state in TERMINAL for re in state.entries) and any(
        re.state == EntryState.DONE for re in state.entries
    )
    if finished and analysis.SIZE_CURVE not in run.results:
        # Computed once here, so the pages that show it only read it.
        curve = analysis.size_curve(run)
        if curve is not None:
            run.results = {**run.results, analysis.SIZE_CURVE: curve}
            Run.objects.filter(pk=run.pk).update(results=run.results)
    return state


def aggregate(run: Run, re: RunEntry) -> None:
    """Aggregate an entry's scores with a bootstrap interval, and a blend's lift over its best member."""
    scores = _values(run, re.entry_id)
    values = [s.value for s in scores.values()]
    interval = stats.bootstrap_mean(values, seed=run.pk)
    latencies = [s.latency_s for s in scores.values()]
    update = {
        "score": _finite(interval.mean),
        "ci_low": _finite(interval.low),
        "ci_high": _finite(interval.high),
        "n": interval.n,
        "member_calls": sum(s.member_calls for s in scores.values()),
        "tokens": sum(s.tokens for s in scores.values()),
        "compute_s": float(sum(s.compute_s for s in scores.values())),
        "latency_p50": float(np.percentile(latencies, 50)) if latencies else None,
        "latency_p95": float(np.percentile(latencies, 95)) if latencies else None,
        "state": EntryState.DONE,
        "finished_at": timezone.now(),
    }
    if re.entry.is_blend:
        update.update(_lift(run, re.entry, scores))
    if RunEntry.objects.filter(pk=re.pk, state=EntryState.SCORED).update(**update):
        events.publish(run, "result", entry=re.entry_id, score=update["score"])


def _values(run: Run, entry_id: int) -> dict[int, Score]:
    return {s.item_id: s for s in Score.objects.filter(run=run, entry_id=entry_id, item__split=run.report_split)}


def _lift(run: Run, blend: Entry, scores: dict[int, Score]) -> dict:
    best, best_score = None, None
    for member_re in RunEntry.objects.filter(run=run, entry__in=blend.ordered_members()):
        if member_re.score is not None and (best_score is None or member_re.score > best_score):
            best, best_score = member_re.entry_id, member_re.score
    if best is None:
        return {}
    member = _values(run, best)
    common = sorted(set(scores) & set(member))
    diff = stats.paired_bootstrap_diff(
        [scores[i].value for i in common], [member[i].value for i in common], seed=run.pk
    )
    blend_values = [scores[i].value for i in common]
    member_values = [member[i].value for i in common]
    binary = all(v in (0.0, 1.0) for v in blend_values + member_values)
    return {
        "best_member_id": best,
        "lift": _finite(diff.mean),
        "lift_low": _finite(diff.low),
        "lift_high": _finite(diff.high),
        # Where each item is simply right or wrong, McNemar's test on the discordant items too.
        "lift_p": _finite(stats.mcnemar([v == 1.0 for v in blend_values], [v == 1.0 for v in member_values]))
        if binary and common
        else None,
    }


def _finite(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)
