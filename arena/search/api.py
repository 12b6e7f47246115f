"""JSON API for blend searches (mounted on /api/v1 by arena/api.py).

Runs and searches are looked up within the token's team, so other teams' ids answer 404.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404
from ninja import Field, Router, Schema

from arena.evaluations.models import Run, State
from arena.search import services
from arena.search.models import BlendSearch, CostMetric
from arena.teams.access import require_role
from arena.teams.models import Role
from ensembles.search import verdict

router = Router(tags=["blend search"])


class SearchIn(Schema):
    members: list[str] = Field(..., description="names of the run's finished entries to combine (2 to 5)")
    budget_metric: str = Field(CostMetric.CALLS, description="calls, tokens or seconds: the cost per item")
    budget: float | None = Field(
        None, description="the most a blend may cost per item, in budget_metric; null: no limit"
    )
    folds: int = Field(5, description="cross-validation folds of the dev split (2 to 10)")
    seed: int = Field(0, description="seed of the folds and the bootstrap intervals")


def search_out(search: BlendSearch) -> dict[str, Any]:
    results = search.results or {}
    candidates = results.get("candidates", [])
    return {
        "id": search.pk,
        "run": search.run_id,
        "suite": search.run.suite.name,
        "members": search.members,
        "budget_metric": search.budget_metric,
        "budget": search.budget,
        "folds": search.folds,
        "seed": search.seed,
        "state": search.state,
        "error": search.error,
        "candidates_total": search.candidates_total,
        "candidates_evaluated": search.candidates_evaluated,
        "seconds": search.seconds,
        "created_at": search.created_at.isoformat(),
        "finished_at": search.finished_at.isoformat() if search.finished_at else None,
        # Each candidate's strategy, params and members are what POST /blends takes to register it.
        "pareto": [{"index": i, **candidates[i]} for i in results.get("pareto", [])],
        "candidates": candidates,
        "members_alone": results.get("members", []),
        # Whether any candidate beats the best member alone on dev by more than its standard error.
        "verdict": verdict(results) if search.state == State.DONE else None,
        "left_out": results.get("left_out", {}),
        "redundant": results.get("redundant", {}),
        "registered": search.registered,
    }


@router.post("/runs/{run_id}/searches", response={201: dict[str, Any]})
def create_search(request, run_id: int, body: SearchIn):
    """Search the blends of a finished run's members on its dev split, within a cost budget per item.

    Runs on a worker; poll ``GET /searches/{id}``. Bad input answers 422 naming the field
    (``members``, ``budget``, ``budget_metric``, ``run``...) and stores nothing.
    """
    require_role(request, Role.MEMBER)
    run = Run.objects.select_related("suite").filter(team=request.auth.team, pk=run_id).first()
    if run is None:
        raise Http404
    search = services.start_search(
        request.auth.team,
        run,
        members=body.members,
        budget_metric=body.budget_metric,
        budget=body.budget,
        folds=body.folds,
        seed=body.seed,
    )
    return 201, search_out(search)


@router.get("/searches/{search_id}", response=dict[str, Any])
def get_search(request, search_id: int):
    search = BlendSearch.objects.select_related("run__suite").filter(team=request.auth.team, pk=search_id).first()
    if search is None:
        raise Http404
    return search_out(search)
