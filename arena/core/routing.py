"""GPU queues: `gpu`, or one queue per shard, and the shard a model's work goes to.

A GPU worker keeps the models it has loaded (ModelPool), so sending all the work of a model to
the workers of one shard means each of those workers loads the weights once, not once per batch.
With ARENA_GPU_SHARDS=1 (the default) there is one queue, `gpu`, and every GPU worker serves
every model; with N shards the queues are `gpu.0` … `gpu.<N-1>` and a model's shard is a stable
hash of its fingerprint. Every process that sends or consumes tasks must agree on N.
"""

from __future__ import annotations

import hashlib

from django.conf import settings

GPU_QUEUE = "gpu"


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
