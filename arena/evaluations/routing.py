"""The router of a run's tasks: every batch of one model goes to that model's GPU queue (arena/core/routing.py).

Blends whose strategy calls a model (fuser, mixture of agents, pipeline, self-consistency) and
judging go to the GPU queue of the model they call first, recorded by planning in the run's
provenance, so they run where that model is loaded; blends that only combine stored answers
stay on `cpu`.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import F

from arena.core.routing import GPU_QUEUE, gpu_queue

GENERATE_TASK = "arena.evaluations.tasks.generate_batch"
COMBINE_TASK = "arena.evaluations.tasks.combine_blend"
JUDGE_TASK = "arena.evaluations.tasks.judge_run"


def fingerprint_of_work_item(work_item_id: int) -> str:
    """The fingerprint planning recorded for the batch's model ('' for a batch that vanished)."""
    from arena.evaluations.models import RunEntry  # here, so the module loads without the app registry

    # One query: the run entry of the same run and entry as the work item.
    fingerprint = (
        RunEntry.objects.filter(run__work_items__pk=work_item_id, run__work_items__entry=F("entry"))
        .values_list("fingerprint", flat=True)
        .first()
    )
    return fingerprint or ""


def called_fingerprint_of_blend(run_entry_id: int) -> str:
    """The fingerprint of the model a blend's combine calls first ('' when it calls none)."""
    from arena.evaluations.models import RunEntry

    row = RunEntry.objects.filter(pk=run_entry_id).values_list("run__provenance", "entry__name").first()
    if row is None:
        return ""
    provenance, name = row
    return ((provenance or {}).get("called_models") or {}).get(name, {}).get("fingerprint", "")


def judge_fingerprint_of_run(run_id: int) -> str:
    """The fingerprint of the run's judge as planning recorded it ('' when there is none)."""
    from arena.evaluations.models import Run

    provenance = Run.objects.filter(pk=run_id).values_list("provenance", flat=True).first()
    return ((provenance or {}).get("judge") or {}).get("fingerprint", "")


def _argument(args, kwargs, name: str):
    return args[0] if args else kwargs[name]


def route_task(name, args, kwargs, options, task=None, **kw):
    """Celery router (CELERY_TASK_ROUTES): batches, calling blends and judging to their model's GPU queue.

    Anything else, and a calling blend or judge whose model planning could not check, falls
    through to the `cpu` queue.
    """
    if name == GENERATE_TASK:
        if settings.ARENA_GPU_SHARDS == 1:
            return {"queue": GPU_QUEUE}
        return {"queue": gpu_queue(fingerprint_of_work_item(_argument(args, kwargs, "work_item_id")))}
    if name == COMBINE_TASK:
        fingerprint = called_fingerprint_of_blend(_argument(args, kwargs, "run_entry_id"))
    elif name == JUDGE_TASK:
        fingerprint = judge_fingerprint_of_run(_argument(args, kwargs, "run_id"))
    else:
        return None
    return {"queue": gpu_queue(fingerprint)} if fingerprint else None
