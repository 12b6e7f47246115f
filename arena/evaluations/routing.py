"""GPU affinity: every batch of one model goes to the same GPU queue.

A GPU worker keeps the models it has loaded (ModelPool), so sending all batches of a model to
the workers of one shard means each of those workers loads the weights once, not once per batch.
With ARENA_GPU_SHARDS=1 (the default) there is one queue, `gpu`, and every GPU worker serves
every model; with N shards the queues are `gpu.0` … `gpu.<N-1>` and a model's shard is a stable
hash of its fingerprint. Every process that sends or consumes tasks must agree on N.

Blends whose strategy calls a model (fuser, mixture of agents, pipeline, self-consistency) and
judging go to the GPU queue of the model they call first, recorded by planning in the run's
provenance, so they run where that model is loaded; blends that only combine stored answers
stay on `cpu`.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db.models import F

GPU_QUEUE = "gpu"
GENERATE_TASK = "arena.evaluations.tasks.generate_batch"
COMBINE_TASK = "arena.evaluations.tasks.combine_blend"
JUDGE_TASK = "arena.evaluations.tasks.judge_run"


def shard_of(fingerprint: str, shards: int) -> int:
    """The shard of a model: the same in every process and on every machine (unlike hash())."""
    digest = hashlib.sha256(fingerprint.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def gpu_queue(fingerprint: str, shards: int | None = None) -> str:
    shards = settings.ARENA_GPU_SHARDS if shards is None else shards
    return GPU_QUEUE if shards == 1 else f"{GPU_QUEUE}.{shard_of(fingerprint, shards)}"


def gpu_queues(shards: int | None = None) -> list[str]:
    """Every GPU queue in use: what the GPU workers, together, must consume."""
    shards = settings.ARENA_GPU_SHARDS if shards is None else shards
    return [GPU_QUEUE] if shards == 1 else [f"{GPU_QUEUE}.{i}" for i in range(shards)]


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
