"""Reads of runs: each entry's row, a run's snapshot, and what a finished run's pages show. Nothing here writes."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from django.utils import timezone

from arena.evaluations import analysis
from arena.evaluations.models import Run, RunEntry, Score, State
from arena.evaluations.regressions import regressions_for
from arena.registry.models import BlendMember, Entry, Kind
from ensembles import stats
from ensembles.strategies import MemberAnswer
from ensembles.strategies.vote import MajorityVote

# What a row shows, read as plain values: building model instances cost more than the query itself
# on a 500-entry board.
ROW_FIELDS = (
    "pk",
    "run_id",
    "entry_id",
    "entry__name",
    "entry__kind",
    "entry__strategy",
    "entry__archived_at",
    "state",
    "error",
    "done_items",
    "total_items",
    "score",
    "ci_low",
    "ci_high",
    "n",
    "lift",
    "lift_low",
    "lift_high",
    "lift_p",
    "best_member__name",
    "member_calls",
    "new_calls",
    "tokens",
    "compute_s",
    "latency_p50",
    "latency_p95",
    "finished_at",
)


def entry_row(v: dict, members: dict[int, list[str]]) -> dict:
    """One RunEntry's row from its ROW_FIELDS values; ``members`` maps a blend to its members' names."""
    is_blend = v["entry__kind"] == Kind.BLEND
    return {
        "entry_id": v["entry_id"],
        "entry": v["entry__name"],
        # What the kind filter shows: the strategy for blends, the kind otherwise (Entry.label).
        "kind": v["entry__strategy"] if is_blend else v["entry__kind"],
        "is_blend": is_blend,
        # Off the boards, kept in the runs that evaluated it (arena/registry/lifecycle.py).
        "archived": v["entry__archived_at"] is not None,
        "members": members.get(v["entry_id"], []) if is_blend else [],
        "state": v["state"],
        "error": v["error"],
        "done_items": v["done_items"],
        "total_items": v["total_items"],
        "score": v["score"],
        "ci_low": v["ci_low"],
        "ci_high": v["ci_high"],
        "n": v["n"],
        "lift": v["lift"],
        "lift_low": v["lift_low"],
        "lift_high": v["lift_high"],
        "lift_p": v["lift_p"],
        "best_member": v["best_member__name"],
        "member_calls": v["member_calls"],
        "new_calls": v["new_calls"],
        "tokens": v["tokens"],
        "compute_s": round(v["compute_s"], 3),
        "latency_p50": v["latency_p50"],
        "latency_p95": v["latency_p95"],
        "run_id": v["run_id"],
        "evaluated_at": v["finished_at"].isoformat() if v["finished_at"] else None,
    }


def result_rows(qs, *extra: str) -> list[tuple[dict, dict]]:
    """(values, row) for each RunEntry of ``qs``: two queries, whatever the number of entries."""
    values = list(qs.values(*ROW_FIELDS, *extra))
    blends = {v["entry_id"] for v in values if v["entry__kind"] == Kind.BLEND}
    members: dict[int, list[str]] = defaultdict(list)
    links = BlendMember.objects.filter(blend_id__in=blends).order_by("blend_id", "position")
    for blend_id, name in links.values_list("blend_id", "member__name"):
        members[blend_id].append(name)
    return [(v, entry_row(v, members)) for v in values]


def run_snapshot(run: Run) -> dict:
    return {**run_fields(run), **run_results(run)}


def run_results(run: Run) -> dict:
    """What the run's entries stored: the part of its snapshot worth caching (arena/evaluations/snapshots.py)."""
    rows = [row for _, row in result_rows(RunEntry.objects.filter(run=run))]
    rows.sort(key=lambda r: (r["is_blend"], r["entry"]))
    found = regressions_for(run)
    regressed = {r["entry_id"] for r in found if r["regressed"]}
    for row in rows:
        row["regressed"] = row["entry_id"] in regressed
    return {"entries": rows, "regressions": found}


def run_fields(run: Run) -> dict:
    """The run's own row, as read: no query beyond its team, suite and judge."""
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
        "state_label": run.get_state_display(),
        "error": run.error,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "elapsed_s": elapsed,
        "provenance": run.provenance,
        "judge": {"entry": run.judge.name, "state": run.judge_state, **run.results} if run.judge_id else None,
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


# --- Mutual-information selection ----------------------------------------------------------


def selection_curves(run: Run) -> list[dict]:
    """For each finished mutual-information selection blend of ``run``: the members in pick order, the
    information each pick added (estimated on dev), and the score on the report split of a vote over
    only the first k picks. The vote's answer is one of its supporters' answers, so it scores what
    that member scored: no item is scored again.
    """
    blends = [
        re.entry
        for re in RunEntry.objects.filter(run=run, state=State.DONE, entry__strategy="mi_selection").select_related(
            "entry"
        )
    ]
    curves = []
    for blend in blends:
        details = Score.objects.filter(run=run, entry=blend).values_list("details", flat=True).first() or {}
        chosen, gain = details.get("chosen") or [], details.get("gain") or []
        if not chosen or len(chosen) != len(gain):
            continue
        grid: dict[int, dict[str, tuple[str, float]]] = defaultdict(dict)
        for item_id, member, prediction, value in Score.objects.filter(
            run=run, entry__blend_links__blend=blend, item__split=run.report_split
        ).values_list("item_id", "entry__name", "prediction", "value"):
            grid[item_id][member] = (prediction, value)
        if not grid:
            continue
        scores = []
        for k in range(1, len(chosen) + 1):
            total = 0.0
            for row in grid.values():
                answers = [MemberAnswer(member=m, answer=row[m][0]) for m in chosen[:k] if m in row]
                supporters = MajorityVote().combine(answers).details["supporters"]
                total += row[supporters[0]][1] if supporters else 0.0
            scores.append(round(total / len(grid), 4))
        curves.append(
            {
                "entry": blend.name,
                "entry_id": blend.pk,
                "split": run.report_split,
                "chosen": chosen,
                "gain": gain,
                "information": [round(x, 6) for x in np.cumsum(gain).tolist()],
                "score": scores,
                "items": len(grid),
            }
        )
    return curves


# --- Does adding members pay? --------------------------------------------------------------


# Where a finished run keeps its ensemble-size curve in Run.results (stored by the run's analyse step).
def size_curve(run: Run) -> dict | None:
    """A finished run's ensemble-size curve (arena.evaluations.analysis.size_curve): the one stored with
    the run, which costs no query; for a run finished without one, computed now and not stored."""
    if not run.finished:
        return None
    stored = run.results.get(analysis.SIZE_CURVE)
    # A curve stored before curves kept their oracle is computed again, as one never stored is.
    if stored and "oracle" in stored:
        return stored
    return analysis.size_curve(run)


# --- What learned blends fitted on dev: boosting rounds, calibration -----------------------

# Strategies with a ``calibrate`` parameter; each records its members' temperatures in every decision.
CALIBRATED = ("weighted_vote", "cascade", "stacking")


def _fitted_details(run: Run, strategies: tuple[str, ...], key: str, **params) -> list[tuple[Entry, dict]]:
    """Finished blends of ``run`` with one of ``strategies`` (and ``params``), each with the details of a
    decision that recorded ``key``: what the blend fitted on dev is the same in all of its decisions."""
    blends = RunEntry.objects.filter(run=run, state=State.DONE, entry__strategy__in=strategies)
    for name, value in params.items():
        blends = blends.filter(**{f"entry__params__{name}": value})
    found = []
    for re in blends.select_related("entry"):
        details = (
            Score.objects.filter(run=run, entry=re.entry, details__has_key=key)
            .values_list("details", flat=True)
            .first()
        )
        if details:
            found.append((re.entry, details))
    return found


def boosting_rounds(run: Run) -> list[dict]:
    """For each finished boosting blend of ``run``: its rounds on dev (member, weighted error, alpha) and
    each member's summed alpha, the weight its answers carry in the vote."""
    return [
        {
            "entry": blend.name,
            "entry_id": blend.pk,
            "classes": details.get("classes"),
            "rounds": [{"round": i, **r} for i, r in enumerate(details["rounds"], start=1)],
            "members": [{"member": m, "alpha": a} for m, a in (details.get("member_weights") or {}).items()],
        }
        for blend, details in _fitted_details(run, ("boosting",), "rounds")
    ]


def calibration_tables(run: Run) -> list[dict]:
    """For each finished blend of ``run`` that calibrates its members: each member's temperature fitted on
    dev, and its expected calibration error there before and after scaling."""
    return [
        {
            "entry": blend.name,
            "entry_id": blend.pk,
            "strategy": blend.strategy,
            "members": [{"member": m, **c} for m, c in details["calibration"].items()],
        }
        for blend, details in _fitted_details(run, CALIBRATED, "calibration", calibrate=True)
    ]
