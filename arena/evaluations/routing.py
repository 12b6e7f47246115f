"""GPU affinity: every batch of one model goes to the same GPU queue.

A GPU worker keeps the models it has loaded (ModelPool), so sending all batches of a model to
the workers of one shard means each of those workers loads the weights once, not once per batch.
With ARENA_GPU_SHARDS=1 (the default) there is one queue, `gpu`, and every GPU worker serves
every model; with N shards the queues are `gpu.0` … `gpu.<N-1>` and a model's shard is a stable
hash of its fingerprint. Every process that sends or consumes tasks must agree on N.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db.models import F

GPU_QUEUE = "gpu"
GENERATE_TASK = "arena.evaluations.tasks.generate_batch"


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


def route_task(name, args, kwargs, options, task=None, **kw):
    """Celery router (CELERY_TASK_ROUTES): generate_batch to its model's GPU queue, others untouched."""
    if name != GENERATE_TASK:
        return None
    if settings.ARENA_GPU_SHARDS == 1:
        return {"queue": GPU_QUEUE}
    work_item_id = args[0] if args else kwargs["work_item_id"]
    return {"queue": gpu_queue(fingerprint_of_work_item(work_item_id))}
