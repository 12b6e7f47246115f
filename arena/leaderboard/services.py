"""Snapshots the pages and the API show: a constant number of queries, whatever the size."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from django.db.models import Exists, F, OuterRef, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from arena.benchmarks.models import Suite, SuiteItem
from arena.benchmarks.services import library_item, library_suite
from arena.evaluations import regressions
from arena.evaluations.models import Run, RunEntry, Score, State
from arena.registry.models import BlendMember, Entry, Kind
from arena.schedules.models import Regression
from arena.teams.models import Team
from ensembles import copula, stats
from ensembles.errors import EnsembleError
from ensembles.strategies import STRATEGIES, MemberAnswer
from ensembles.strategies.vote import MajorityVote, vote_key

# What a row shows, read as plain values: building model instances cost more than the query itself
# on a 500-entry board.
ROW_FIELDS = (
    "pk",
    "run_id",
    "entry_id",
    "entry__name",
    "entry__kind",
    "entry__strategy",
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


def _rows(qs, *extra: str) -> list[tuple[dict, dict]]:
    """(values, row) for each RunEntry of ``qs``: two queries, whatever the number of entries."""
    values = list(qs.values(*ROW_FIELDS, *extra))
    blends = {v["entry_id"] for v in values if v["entry__kind"] == Kind.BLEND}
    members: dict[int, list[str]] = defaultdict(list)
    links = BlendMember.objects.filter(blend_id__in=blends).order_by("blend_id", "position")
    for blend_id, name in links.values_list("blend_id", "member__name"):
        members[blend_id].append(name)
    return [(v, entry_row(v, members)) for v in values]


def board(team: Team, suite_name: str, version: str | None = None) -> dict:
    """The latest result of every entry the team evaluated on ``suite_name`` (any version, or only ``version``)."""
    runs = Run.objects.filter(team=team, suite__name=suite_name).exclude(state=State.QUEUED)
    if version:
        runs = runs.filter(suite__version=version)
    # Each entry's newest result among this suite's runs, ranked by a window over those rows only: it
    # costs the same whatever the team evaluated on other suites, where a correlated subquery per row
    # left the plan to the database's row estimates (seconds at 500 entries x 20 suites).
    newest_first = Window(
        RowNumber(), partition_by=[F("entry_id")], order_by=[F("run__created_at").desc(), F("run_id").desc()]
    )
    rows = _rows(
        RunEntry.objects.filter(run__in=runs)
        .annotate(recency=newest_first)
        .filter(recency=1)
        .order_by()  # sorted below, by score
        .annotate(suite_version=F("run__suite__version"))
        .annotate(regressed=Exists(Regression.objects.filter(run_entry=OuterRef("pk")))),
        "suite_version",
        "regressed",
    )
    scored = [row for _, row in rows if row["score"] is not None]
    intervals = [stats.Interval(r["score"], r["ci_low"], r["ci_high"], r["n"]) for r in scored]
    for row, bound in zip(scored, stats.rank_upper_bounds(intervals), strict=True):
        row["rank_upper_bound"] = bound
    out = []
    for v, row in rows:
        row.setdefault("rank_upper_bound", None)
        row["suite_version"] = v["suite_version"]
        # Stored when the run closed (arena/schedules): this result fell below the entry's previous one.
        row["regressed"] = v["regressed"]
        out.append(row)
    out.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0), r["entry"]))
    return {"team": team.slug, "suite": suite_name, "rows": out}


def run_snapshot(run: Run) -> dict:
    return {**run_fields(run), **run_results(run)}


def run_results(run: Run) -> dict:
    """What the run's entries stored: the part of its snapshot worth caching (arena/leaderboard/snapshots.py)."""
    rows = [row for _, row in _rows(RunEntry.objects.filter(run=run))]
    rows.sort(key=lambda r: (r["is_blend"], r["entry"]))
    found = regressions.for_run(run)
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


# --- Sorting and filtering what a leaderboard shows ------------------------------------------

# ?sort= value -> row key; "-" in front sorts descending. Empty values go last either way.
SORTS = {
    "entry": "entry",
    "kind": "kind",
    "score": "score",
    "rank": "rank_upper_bound",
    "lift": "lift",
    "calls": "member_calls",
    "tokens": "tokens",
    "compute": "compute_s",
    "latency": "latency_p50",
    "latency_p95": "latency_p95",
    "version": "suite_version",
    "evaluated": "evaluated_at",
}


def sort_rows(rows: list[dict], sort: str) -> list[dict]:
    """Rows ordered by ``sort`` (a key of SORTS, optionally prefixed with "-"); ties by entry name."""
    key = SORTS[sort.removeprefix("-")]
    present = sorted((r for r in rows if r.get(key) is not None), key=lambda r: r["entry"])
    present.sort(key=lambda r: r[key], reverse=sort.startswith("-"))
    return present + sorted((r for r in rows if r.get(key) is None), key=lambda r: r["entry"])


def suite_versions(team: Team, suite_name: str) -> list[str]:
    return list(
        Suite.objects.filter(team=team, name=suite_name).order_by("-created_at").values_list("version", flat=True)
    )


# --- Across suites -------------------------------------------------------------------------


def across_suites(team: Team) -> dict:
    """Every entry's latest finished score on each of the team's suites, and how it fares against the others.

    The ranking is the mean win rate (HELM's): on each suite, the share of the other entries the
    entry beats (ties count half), averaged over the suites it was evaluated on. Unlike a mean score
    it does not let one suite's scale dominate. Two queries, whatever the number of entries.
    """
    newest_first = Window(
        RowNumber(),
        partition_by=[F("entry_id"), F("run__suite__name")],
        order_by=[F("run__created_at").desc(), F("run_id").desc()],
    )
    latest = list(
        RunEntry.objects.filter(run__team=team, state=State.DONE, score__isnull=False)
        .exclude(run__suite__task_type="judge")
        .annotate(recency=newest_first)
        .filter(recency=1)
        .order_by()  # the model's default ordering would sort 10,000 rows by name for nothing
        .values_list("entry_id", "run__suite__name", "score", "run_id")
    )
    entries = {e.pk: e for e in Entry.objects.filter(pk__in={r[0] for r in latest}).only("name", "kind", "strategy")}
    by_suite: dict[str, list[tuple]] = defaultdict(list)
    for r in latest:
        by_suite[r[1]].append(r)
    suites = sorted(by_suite)
    rows: dict[int, dict] = {}
    wins: dict[int, list[float]] = defaultdict(list)
    for suite in suites:
        here = by_suite[suite]
        scores = np.array([r[2] for r in here])
        ordered = np.sort(scores)
        # Entries below each score, and ties (the entry itself left out), by binary search.
        below = np.searchsorted(ordered, scores, side="left")
        ties = np.searchsorted(ordered, scores, side="right") - below - 1
        rates = (below + ties / 2) / (len(here) - 1) if len(here) > 1 else [None] * len(here)
        for (entry_id, _, score, run_id), rate in zip(here, rates, strict=True):
            e = entries[entry_id]
            row = rows.setdefault(
                entry_id,
                {"entry_id": e.pk, "entry": e.name, "kind": e.label, "is_blend": e.is_blend, "scores": {}, "runs": {}},
            )
            row["scores"][suite], row["runs"][suite] = score, run_id
            if rate is not None:
                wins[entry_id].append(float(rate))
    out = []
    for entry_id, row in rows.items():
        row["win_rate"] = round(float(np.mean(wins[entry_id])), 4) if wins[entry_id] else None
        row["mean_score"] = round(float(np.mean(list(row["scores"].values()))), 4)
        row["suites"] = len(row["scores"])
        out.append(row)
    out.sort(key=lambda r: (r["win_rate"] is None, -(r["win_rate"] or 0), -r["mean_score"], r["entry"]))
    return {"team": team.slug, "suites": suites, "rows": out}


# --- An entry's history --------------------------------------------------------------------


def entry_history(entry: Entry, limit: int = 60) -> list[dict]:
    """The entry's last ``limit`` finished results, each checked for a regression against the one before
    on the same suite with the rule the run page uses (arena.evaluations.regressions). A constant
    number of queries."""
    done = list(
        RunEntry.objects.filter(entry=entry, state=State.DONE, score__isnull=False)
        .select_related("run__suite", "entry")
        .order_by("-run__created_at", "-run_id")[: limit + 1]
    )
    previous: dict[int, RunEntry] = {}
    last_seen: dict[str, RunEntry] = {}
    for re in reversed(done):
        if re.run.suite.task_type == "judge":
            continue
        if re.run.suite.name in last_seen:
            previous[re.pk] = last_seen[re.run.suite.name]
        last_seen[re.run.suite.name] = re
    values = regressions._item_values(
        [(re.run_id, re.entry_id, re.run.report_split) for re in done if re.run.suite.task_type != "judge"]
    )
    points = []
    for re in done[:limit]:
        point = {
            "run_id": re.run_id,
            "suite": re.run.suite.name,
            "version": re.run.suite.version,
            "at": re.run.created_at.isoformat(),
            "score": re.score,
            "ci_low": re.ci_low if re.ci_low is not None else re.score,
            "ci_high": re.ci_high if re.ci_high is not None else re.score,
            "regressed": False,
        }
        prev = previous.get(re.pk)
        if prev is not None:
            verdict = regressions._compare(
                re,
                prev,
                values.get((re.run_id, re.entry_id), {}),
                values.get((prev.run_id, prev.entry_id), {}),
                seed=re.run_id,
            )
            point.update({k: verdict[k] for k in ("previous_run_id", "delta", "delta_low", "delta_high", "regressed")})
        points.append(point)
    return points


def entry_provenance(entry: Entry) -> dict:
    """What produced the entry's latest result: the run's library versions and git revision, the
    model fingerprint, and for a blend its strategy with every parameter (defaults included)."""
    latest = (
        RunEntry.objects.filter(entry=entry)
        .exclude(state=State.QUEUED)
        .select_related("run")
        .order_by("-run__created_at", "-run_id")
        .first()
    )
    out: dict = {"run_id": None, "fingerprint": "", "provenance": {}}
    if latest is not None:
        out.update(run_id=latest.run_id, fingerprint=latest.fingerprint, provenance=latest.run.provenance)
    if entry.is_blend and entry.strategy in STRATEGIES:
        cls = STRATEGIES.get(entry.strategy)
        out["strategy"] = {
            "name": entry.strategy,
            "pretty_name": cls.pretty_name or entry.strategy,
            "reference_url": cls.reference_url,
            "learns_on_dev": cls.needs_fit,
            "calls_models": cls.calls_models,
        }
        try:
            strategy = cls(entry.params)
        except EnsembleError as exc:
            out["strategy"]["params_error"] = str(exc)
        else:
            out["strategy"]["params"] = strategy.params.model_dump(mode="json")
            # Whether it learns can depend on the parameters (a confidence vote does not, unless calibrated).
            out["strategy"]["learns_on_dev"] = strategy.needs_fit
    return out


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

# Where a finished run keeps its ensemble-size curve in Run.results once computed.
SIZE_CURVE = "size_curve"


def run_size_curve(run: Run) -> dict | None:
    """Majority vote over the best n single models (n = 1..N) measured on each split of the run, next to
    what the Gaussian-copula model of their correlated errors predicts (ensembles.copula) and the level
    it converges to as members are added.

    Members are ranked, and the model fitted, on dev (on the report split when the run has no dev
    items). Only where every score is 0 or 1 (the rule the McNemar test uses); None otherwise, for
    judge runs, or with fewer than two single models. Computed once per finished run and kept in
    ``run.results``, so a later view costs no query.
    """
    if run.state != State.DONE or run.judge_id or run.suite.task_type == "judge":
        return None
    if SIZE_CURVE in run.results:
        return run.results[SIZE_CURVE]
    curve = _size_curve(run)
    results = {**run.results, SIZE_CURVE: curve}
    Run.objects.filter(pk=run.pk, state=State.DONE).update(results=results)
    run.results = results
    return curve


def _size_curve(run: Run) -> dict | None:
    names = dict(
        RunEntry.objects.filter(run=run, state=State.DONE)
        .exclude(entry__kind=Kind.BLEND)
        .values_list("entry_id", "entry__name")
    )
    if len(names) < 2:
        return None
    grid: dict[str, dict[int, dict[int, tuple[str, float]]]] = defaultdict(lambda: defaultdict(dict))
    for split, item_id, entry_id, prediction, value in Score.objects.filter(run=run, entry_id__in=names).values_list(
        "item__split", "item_id", "entry_id", "prediction", "value"
    ):
        grid[split][item_id][entry_id] = (prediction, value)
    if any(v not in (0.0, 1.0) for rows in grid.values() for row in rows.values() for _, v in row.values()):
        return None

    def complete(split: str) -> list[int]:
        return [i for i, row in grid[split].items() if len(row) == len(names)]

    fit_split = "dev" if complete("dev") else run.report_split
    fit_items = complete(fit_split)
    if not fit_items:
        return None
    accuracy = {e: float(np.mean([grid[fit_split][i][e][1] for i in fit_items])) for e in names}
    order = sorted(names, key=lambda e: (-accuracy[e], names[e]))
    fit = copula.fit_copula([[grid[fit_split][i][e][1] for i in fit_items] for e in order])
    predicted = copula.predicted_vote_accuracy(fit.accuracy, fit.correlation, seed=run.pk)
    measured, items = {}, {}
    for split in sorted(run.splits, key=lambda s: s != fit_split):
        if rows := complete(split):
            answers = [[grid[split][i][e][0] for i in rows] for e in order]
            values = [[grid[split][i][e][1] for i in rows] for e in order]
            measured[split] = [round(x, 4) for x in copula.vote_curve(answers, values)]
            items[split] = len(rows)
    asymptote = copula.vote_asymptote(fit.mean_accuracy, fit.mean_correlation)
    curve = {
        "members": [names[e] for e in order],
        "sizes": list(range(1, len(order) + 1)),
        "fit_split": fit_split,
        "accuracy": [round(float(p), 4) for p in fit.accuracy],
        "mean_accuracy": round(fit.mean_accuracy, 4),
        "mean_correlation": None if np.isnan(fit.mean_correlation) else round(fit.mean_correlation, 3),
        "correlation": [[round(float(x), 3) for x in row] for row in fit.correlation],
        "predicted": [round(float(x), 4) for x in predicted],
        "asymptote": None if np.isnan(asymptote) else round(asymptote, 4),
        "measured": measured,
        "items": items,
    }
    report = run.report_split if run.report_split in measured else fit_split
    curve["reading"] = _size_reading(curve, report)
    return curve


def _size_reading(curve: dict, split: str) -> str:
    """One sentence: where the model says the vote goes, and where the measured vote peaks."""
    p, rho, limit = curve["mean_accuracy"], curve["mean_correlation"], curve["asymptote"]
    if limit is None:
        model = f"Every member is always right or always wrong on {curve['fit_split']}: the model has nothing to fit"
    elif rho <= 0:
        model = (
            f"The model predicts majority vote of these members keeps gaining toward {limit:.0%} as members are "
            f"added, as Condorcet says: their errors do not correlate (ρ̄={rho:.2f})"
        )
    elif p > 0.5:
        model = (
            f"The model predicts majority vote of these members levels off at {limit:.0%}: "
            f"the members' errors correlate at ρ̄={rho:.2f}"
        )
    elif p < 0.5:
        model = (
            f"The model predicts majority vote of these members sinks toward {limit:.0%}: they are right on fewer "
            f"than half the {curve['fit_split']} items on average (p̄={p:.2f}) and their errors correlate at ρ̄={rho:.2f}"
        )
    else:
        model = f"The model predicts majority vote of these members stays at 50% (p̄=0.50, ρ̄={rho:.2f})"
    measured = curve["measured"][split]
    best = int(np.argmax(measured))  # the smallest vote that reaches the best score
    if best == 0:
        found = f"measured on {split}, no vote beats the best member alone ({measured[0]:.0%})"
    else:
        found = f"measured on {split}, the best {best + 1} of {len(measured)} score highest ({measured[best]:.0%})"
    return f"{model}; {found}."


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


# --- Two entries, item by item -------------------------------------------------------------

SHOW = ("differ", "answers", "all")


def compare(a: RunEntry, b: RunEntry, show: str = "differ") -> dict:
    """Two finished results item by item: a paired interval on the difference, who won where, and the
    items where they differ (``show``: scores differ, answers differ, or all items).

    Results on the same suite version pair items by id; across versions, by the item's key, and
    only items both versions have count.
    """
    same_suite = a.run.suite_id == b.run.suite_id

    def values(re: RunEntry) -> dict:
        rows = Score.objects.filter(run=re.run, entry=re.entry, item__split=re.run.report_split).values_list(
            "item_id", "item__key", "prediction", "value"
        )
        return {(item_id if same_suite else key): (item_id, key, pred, value) for item_id, key, pred, value in rows}

    va, vb = values(a), values(b)
    common = sorted(set(va) & set(vb), key=lambda k: va[k][1])
    xs = [va[k][3] for k in common]
    ys = [vb[k][3] for k in common]
    summary: dict = {"items": len(common), "a_only": len(va) - len(common), "b_only": len(vb) - len(common)}
    if common:
        diff = stats.paired_bootstrap_diff(xs, ys, seed=a.run_id + b.run_id)
        summary.update(
            a_mean=float(np.mean(xs)),
            b_mean=float(np.mean(ys)),
            diff=diff.mean,
            diff_low=diff.low,
            diff_high=diff.high,
            a_better=sum(x > y for x, y in zip(xs, ys, strict=True)),
            b_better=sum(x < y for x, y in zip(xs, ys, strict=True)),
            same=sum(x == y for x, y in zip(xs, ys, strict=True)),
        )
        binary = all(v in (0.0, 1.0) for v in xs + ys)
        summary["mcnemar_p"] = stats.mcnemar([x == 1.0 for x in xs], [y == 1.0 for y in ys]) if binary else None
    shown = [
        k
        for k in common
        if show == "all"
        or (show == "differ" and va[k][3] != vb[k][3])
        or (show == "answers" and vote_key(va[k][2]) != vote_key(vb[k][2]))
    ]
    items = SuiteItem.objects.in_bulk([va[k][0] for k in shown])
    suite = library_suite(a.run.suite)
    rows = []
    for k in shown:
        item = items[va[k][0]]
        rows.append(
            {
                "key": va[k][1],
                "a_item_id": va[k][0],
                "b_item_id": vb[k][0],
                "input": item.data.get("input", ""),
                "reference": suite.reference_answer(library_item(item)),
                "a_prediction": va[k][2],
                "a_value": va[k][3],
                "b_prediction": vb[k][2],
                "b_value": vb[k][3],
            }
        )
    return {"summary": summary, "rows": rows, "same_suite": same_suite}
