"""Blend search over a finished run: check the request, search the stored dev answers, register a find.

The search reads the run's dev-split scores only (never a test item), through the library's
``ensembles.search``; what it finds becomes an entry like any other, whose test score a run of
it then computes (its members' answers come from the generation cache, so they cost nothing).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from arena.benchmarks.models import SuiteItem
from arena.benchmarks.services import library_item
from arena.core import queue
from arena.core.retry import TRANSIENT
from arena.evaluations.blends import member_answer, shipped_encoder
from arena.evaluations.models import Run, RunEntry, Score, State
from arena.evaluations.services import create_run
from arena.registry import services as registry
from arena.registry.models import Entry
from arena.search.models import BlendSearch, CostMetric
from arena.teams.models import Team
from ensembles.errors import EnsembleError
from ensembles.search import (
    Cost,
    DevItem,
    SearchResult,
    default_space,
    enumerate_candidates,
    one_member_only,
    search_blends,
)
from ensembles.suites import Suite as LibSuite
from ensembles.suites import SuiteManifest

MAX_MEMBERS = 5
MAX_SUBSET = 4  # members per candidate blend at most
# Five members make 650 candidates with today's strategies; each takes about a tenth of a second.
MAX_CANDIDATES = 700
MAX_FOLDS = 10
# A budget above these is no budget at all: per item, in the metric's unit.
BUDGET_LIMITS = {CostMetric.CALLS: 64.0, CostMetric.TOKENS: 1_000_000.0, CostMetric.SECONDS: 3600.0}
# How often a running search writes its progress.
PROGRESS_EVERY_S = 1.0


def searchable_members(run: Run) -> list[str]:
    """Names of the run's entries that finished, which a search may combine."""
    return list(
        RunEntry.objects.filter(run=run, state=State.DONE).order_by("entry__name").values_list("entry__name", flat=True)
    )


def _check_run(run: Run) -> None:
    if not run.finished:
        raise ValidationError({"run": f"run #{run.pk} is {run.state}; a search reads the answers of a finished run"})
    if run.suite.task_type == "judge":
        raise ValidationError({"run": "a judge suite has no per-item metric for a search to estimate quality with"})
    if "dev" not in run.splits:
        raise ValidationError(
            {
                "run": f"run #{run.pk} has no dev split (it ran {', '.join(run.splits)}): a search fits and "
                "estimates on dev only; run the members with a learned blend, or with splits dev and test"
            }
        )


def _check_members(run: Run, members: Any) -> list[str]:
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise ValidationError({"members": "members must be a list of entry names"})
    if len(set(members)) != len(members):
        raise ValidationError({"members": "a member appears twice"})
    if not 2 <= len(members) <= MAX_MEMBERS:
        raise ValidationError({"members": f"choose between 2 and {MAX_MEMBERS} members; got {len(members)}"})
    finished = searchable_members(run)
    unknown = [m for m in members if m not in finished]
    if unknown:
        raise ValidationError(
            {
                "members": f"not finished entries of run #{run.pk}: {', '.join(unknown)} "
                f"(its finished entries: {', '.join(finished) or 'none'})"
            }
        )
    # The most candidates the members could make (every strategy, option scores and the encoder at hand).
    space, _ = default_space(embedder=True, option_scores=True)
    count = len(enumerate_candidates(members, space, max_members=MAX_SUBSET))
    if count > MAX_CANDIDATES:
        raise ValidationError(
            {
                "members": f"{len(members)} members make {count} candidate blends, more than {MAX_CANDIDATES}: choose fewer"
            }
        )
    return members


def _check_budget(metric: Any, budget: Any) -> float | None:
    if metric not in CostMetric.values:
        raise ValidationError({"budget_metric": f"budget_metric must be one of {', '.join(CostMetric.values)}"})
    if budget is None:
        return None
    limit = BUDGET_LIMITS[CostMetric(metric)]
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not math.isfinite(budget):
        raise ValidationError({"budget": "budget must be a number (or empty for no limit)"})
    if not 0 < budget <= limit:
        raise ValidationError(
            {"budget": f"budget must be above 0 and at most {limit:g} {CostMetric(metric).label}; got {budget:g}"}
        )
    return float(budget)


def start_search(
    team: Team,
    run: Run,
    *,
    members: list[str],
    budget_metric: str = CostMetric.CALLS,
    budget: float | None = None,
    folds: int = 5,
    seed: int = 0,
    user=None,
) -> BlendSearch:
    """Check the request and queue the search; a bad request stores nothing (ValidationError names the field)."""
    if run.team_id != team.pk:
        raise ValidationError({"run": "the run must belong to the team"})
    _check_run(run)
    budget = _check_budget(budget_metric, budget)
    members = _check_members(run, members)
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= MAX_FOLDS:
        raise ValidationError({"folds": f"folds must be a whole number from 2 to {MAX_FOLDS}"})
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ValidationError({"seed": "seed must be a whole number from 0 to 2^31 - 1"})
    with transaction.atomic():
        search = BlendSearch.objects.create(
            team=team,
            run=run,
            members=members,
            budget_metric=budget_metric,
            budget=budget,
            folds=folds,
            seed=seed,
            created_by=user,
        )
        queue.send_on_commit("arena.search.tasks.run_search", search.pk)
    return search


def claim(search_id: int) -> bool:
    """Take the search: queued, or running under a claim older than a task may run (its worker died)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    return bool(
        BlendSearch.objects.filter(pk=search_id)
        .filter(Q(state=State.QUEUED) | Q(state=State.RUNNING, started_at__lt=stale))
        .update(state=State.RUNNING, started_at=now, candidates_evaluated=0)
    )


def _release(search_id: int) -> None:
    """Give a claimed search back to the queue, for the retry of a task that hit a transient error."""
    try:
        BlendSearch.objects.filter(pk=search_id, state=State.RUNNING).update(state=State.QUEUED)
    except TRANSIENT:
        pass  # the database is still away: the claim goes stale and the retry takes it over then


def run_search(search_id: int) -> None:
    """Search the run's stored dev answers and keep every candidate's estimate and the Pareto set.

    A transient error (the database away) gives the search back to the queue before it reaches the
    task, whose retry claims it again.
    """
    if not claim(search_id):
        return
    try:
        _run_claimed(search_id)
    except TRANSIENT:
        _release(search_id)
        raise


def _run_claimed(search_id: int) -> None:
    search = BlendSearch.objects.select_related("run__suite", "team").get(pk=search_id)
    try:
        result = _search(search)
    except (EnsembleError, ValueError) as exc:
        BlendSearch.objects.filter(pk=search_id).update(
            state=State.FAILED, error=str(exc)[:2000], finished_at=timezone.now()
        )
        return
    BlendSearch.objects.filter(pk=search_id).update(
        state=State.DONE,
        results=result.as_dict(),
        candidates_total=result.evaluated,
        candidates_evaluated=result.evaluated,
        seconds=result.seconds,
        finished_at=timezone.now(),
    )


def dev_items(search: BlendSearch) -> tuple[list[DevItem], LibSuite]:
    """The run's dev items with each member's stored answer and cost, and a suite of those items alone.

    Only dev rows are queried, so the search cannot read a test item even by mistake.
    """
    run = search.run
    entries = {e.name: e for e in Entry.objects.filter(team=search.team, name__in=search.members)}
    gone = [m for m in search.members if m not in entries]
    if gone:
        raise EnsembleError(f"entries deleted since the search was asked for: {', '.join(gone)}")
    members = [entries[m] for m in search.members]
    rows = {row.pk: row for row in SuiteItem.objects.filter(suite=run.suite, split="dev").order_by("position")}
    items = {pk: library_item(row) for pk, row in rows.items()}
    suite = LibSuite(SuiteManifest.model_validate(run.suite.manifest), items.values())
    grid: dict[int, dict[int, Score]] = defaultdict(dict)
    for s in Score.objects.filter(run=run, entry__in=members, item__in=list(rows)).select_related("generation"):
        grid[s.item_id][s.entry_id] = s
    out = []
    for pk, row in rows.items():
        found = grid.get(pk, {})
        if not found:
            continue
        out.append(
            DevItem(
                key=row.key,
                answers=[member_answer(m, found[m.pk]) for m in members if m.pk in found],
                costs={
                    m.name: Cost(found[m.pk].member_calls, found[m.pk].tokens, found[m.pk].compute_s)
                    for m in members
                    if m.pk in found
                },
                reference=suite.reference_answer(items[pk]),
                input=row.data["input"],
            )
        )
    if not out:
        raise EnsembleError(f"run #{run.pk} holds no dev answers from {', '.join(search.members)}")
    return out, suite


def _search(search: BlendSearch) -> SearchResult:
    items, suite = dev_items(search)
    by_id = {item.id: item for item in suite.items}

    def score(item: DevItem, answer: str) -> float:
        return suite.score(by_id[item.key], answer)[1]

    last = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        # Written at most once a second: the page polls it, and a search may try hundreds of candidates.
        if done == total or time.monotonic() - last[0] >= PROGRESS_EVERY_S:
            last[0] = time.monotonic()
            BlendSearch.objects.filter(pk=search.pk).update(candidates_evaluated=done, candidates_total=total)

    encoder = settings.MODELS_DIR / "all-MiniLM-L6-v2" / "model.safetensors"
    return search_blends(
        items,
        score,
        members=search.members,
        metric=search.budget_metric,
        budget=search.budget,
        max_members=MAX_SUBSET,
        max_candidates=MAX_CANDIDATES,
        folds=search.folds,
        seed=search.seed,
        # Without the shipped encoder the router is left out, and the result says so.
        embedder=shipped_encoder() if encoder.is_file() else None,
        progress=progress,
    )


# --- Registering what it found ----------------------------------------------------------------


def suggested_name(search: BlendSearch, index: int) -> str:
    candidate = search.results["candidates"][index]
    return f"search{search.pk}-{candidate['strategy'].replace('_', '-')}-{index}"


def register_candidate(
    search: BlendSearch, index: int, *, name: str, run_it: bool = True, user=None
) -> tuple[Entry, Run | None]:
    """Register candidate ``index`` as a blend and, with ``run_it``, start a run of it on the search's suite.

    Both or neither: a refused run (or name) stores no blend.
    """
    if search.state != State.DONE:
        raise ValidationError({"candidate": f"search #{search.pk} is {search.state}; register once it is done"})
    candidates = search.results.get("candidates", [])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(candidates):
        raise ValidationError(
            {"candidate": f"no candidate {index!r}: search #{search.pk} has candidates 0 to {len(candidates) - 1}"}
        )
    candidate = candidates[index]
    if candidate["error"]:
        raise ValidationError({"candidate": f"candidate {index} could not be estimated: {candidate['error']}"})
    if one_member_only(candidate["strategy"], candidate["params"]):
        raise ValidationError(
            {"candidate": f"candidate {index} only ever consults one member: it is that member alone, not a blend"}
        )
    with transaction.atomic():
        locked = BlendSearch.objects.select_for_update().get(pk=search.pk)
        earlier = locked.registered.get(str(index))
        if earlier and Entry.objects.filter(team=search.team, name=earlier).exists():
            raise ValidationError({"candidate": f"candidate {index} is already registered as {earlier!r}"})
        blend = registry.register_blend(
            search.team,
            name=name,
            strategy=candidate["strategy"],
            params=candidate["params"],
            members=candidate["members"],
            user=user,
            description=_description(locked, candidate),
        )
        run = create_run(search.team, search.run.suite, [blend], user=user) if run_it else None
        locked.registered = {**locked.registered, str(index): blend.name}
        locked.save(update_fields=["registered"])
    search.registered = locked.registered
    return blend, run


def _description(search: BlendSearch, candidate: dict) -> str:
    cost = candidate["cost"][search.budget_metric]
    return (
        f"Found by blend search #{search.pk} on run #{search.run_id}: dev quality {candidate['quality']:.3f} "
        f"± {candidate['stderr']:.3f} ({search.folds}-fold cross-validation), "
        f"{cost:.3g} {CostMetric(search.budget_metric).label}."
    )
