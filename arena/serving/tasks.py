"""Thin Celery wrappers: generate the /v1 requests waiting in a lane (arena/serving/batching.py), and
answer a sampled request with the entry's shadow (arena/serving/shadows.py)."""

from __future__ import annotations

from celery import shared_task

from arena.core.retry import RETRY
from arena.serving import batching, shadows


# No retries: every request a task takes is answered, an error included, and its clients are waiting
# now; a retry seconds later would find the lane empty or would be too late for them.
@shared_task(acks_late=True)
def serve_lane(lane: str, entry_id: int, fingerprint: str, params: dict) -> int:
    """Sent on the model's GPU queue with each /v1 request that waits in ``lane``."""
    return batching.serve_lane(lane, entry_id, fingerprint, params)


@shared_task(**RETRY)
def answer_shadow(sample_id: int) -> None:
    """Sent after the client's answer is built, on the GPU queue; a retry finds the sample queued again."""
    shadows.answer_sample(sample_id)
