"""The boards' reads: a suite's ranking, every suite at once, two entries item by item, an entry's card.

A constant number of queries whatever the size; nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from django.db.models import Exists, F, OuterRef, Window
from django.db.models.functions import RowNumber

from arena.alerts.models import Regression
from arena.benchmarks.models import Suite, SuiteItem
from arena.benchmarks.services import library_item, library_suite
from arena.evaluations.models import Run, RunEntry, Score, State
from arena.evaluations.queries import result_rows
from arena.evaluations.regressions import compare_results, item_values
from arena.registry.models import Entry
from arena.teams.models import Team
from ensembles import stats
from ensembles.answers import vote_key
from ensembles.errors import EnsembleError
from ensembles.strategies import STRATEGIES


def board(team: Team, suite_name: str, version: str | None = None) -> dict:
    """The latest result of every entry the team evaluated on ``suite_name`` (any version, or only ``version``)."""
    # Archived entries and suite versions leave the boards; their runs still show them.
    runs = Run.objects.filter(team=team, suite__name=suite_name, suite__archived_at__isnull=True).exclude(
        state=State.QUEUED
    )
    if version:
        runs = runs.filter(suite__version=version)
    # Each entry's newest result among this suite's runs, ranked by a window over those rows only: it
    # costs the same whatever the team evaluated on other suites, where a correlated subquery per row
    # left the plan to the database's row estimates (seconds at 500 entries x 20 suites).
    newest_first = Window(
        RowNumber(), partition_by=[F("entry_id")], order_by=[F("run__created_at").desc(), F("run_id").desc()]
    )
    rows = result_rows(
        RunEntry.objects.filter(run__in=runs, entry__archived_at__isnull=True)
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


# --- Sorting and filtering what a leaderboard shows ------------------------------------------

# ?sort= value -> row key; "-" in front sorts descending. Empty values go last either way.
SORTS = {
    "entry": "entry",
    "kind": "kind",
    "score": "score",
    "n": "n",
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
        RunEntry.objects.filter(
            run__team=team,
            state=State.DONE,
            score__isnull=False,
            entry__archived_at__isnull=True,
            run__suite__archived_at__isnull=True,
        )
        .exclude(run__suite__task_type="judge")
        .annotate(recency=newest_first)
        .filter(recency=1)
        .order_by()  # the model's default ordering would sort 10,000 rows by name for nothing
        .values_list("entry_id", "run__suite__name", "score", "run_id", "lift")
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
        for (entry_id, _, score, run_id, lift), rate in zip(here, rates, strict=True):
            e = entries[entry_id]
            row = rows.setdefault(
                entry_id,
                {
                    "entry_id": e.pk,
                    "entry": e.name,
                    "kind": e.label,
                    "is_blend": e.is_blend,
                    "scores": {},
                    "runs": {},
                    "lifts": {},
                },
            )
            row["scores"][suite], row["runs"][suite] = score, run_id
            if lift is not None:  # a blend's paired difference with its best member on that run
                row["lifts"][suite] = lift
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


# --- One entry, run after run ---------------------------------------------------------------


def entry_history(entry: Entry, limit: int = 60) -> list[dict]:
    """The entry's last ``limit`` finished results, each checked for a regression against the one before
    on the same suite with the rule the run page uses (arena/evaluations/regressions.py). A constant
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
    values = item_values(
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
            verdict = compare_results(
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
